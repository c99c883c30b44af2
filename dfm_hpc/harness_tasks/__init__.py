"""Task definitions this project writes for the harnesses that run as clients of a served model, from the
harness environment (not from the job's own): `inspect_danish.py` for inspect_ai. They are loaded by file
path (`inspect eval <file>@<task>`), never imported by dfm_hpc itself."""
