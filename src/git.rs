//! Git service behind `/api/git/*`: shells out to `git` with no pager and a timeout.
