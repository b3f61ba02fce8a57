"""Documents to training records: OCR, synthetic documents, patchify, prepare, pipeline."""
