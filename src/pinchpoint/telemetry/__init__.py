"""Phase timers, the MLPerf logger, the timeline trace and the run summary statistics."""
