"""Reports from MLflow: tables, plots, crossovers. Reads recorded runs only; imports no torch."""
