"""The job: events from a source through finding and fitting into a result store, and the report."""
