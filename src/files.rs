//! File service behind `/api/file/*`: streamed uploads written atomically, streamed downloads.
