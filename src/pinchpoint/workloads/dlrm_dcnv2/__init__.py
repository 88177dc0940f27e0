"""DLRM-DCNv2 (MLPerf Training recommendation benchmark)."""
