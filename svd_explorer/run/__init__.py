"""One run: its description (RunConfig), checks, plan and execution, records, the background worker."""
