"""What users run on top of inference: files to rows, writers, figures, serve, ray."""
