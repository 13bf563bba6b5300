//! Repository identity for archive headers: origin URL with credentials removed, branch, HEAD.

use std::path::Path;

use super::run::git;

/// Repository identity for archive headers: origin URL (credentials removed), branch, HEAD.
#[derive(Debug, Default, Clone)]
pub struct RepoMetadata {
    pub remote: Option<String>,
    pub branch: Option<String>,
    pub head_commit: Option<String>,
}

/// Best-effort [`RepoMetadata`] of `repo`.
pub async fn repository_metadata(repo: &Path) -> RepoMetadata {
    let mut meta = RepoMetadata::default();
    if let Ok(remote) = git(&["git", "--no-pager", "remote", "get-url", "origin"], repo).await {
        if !remote.is_empty() {
            meta.remote = Some(redact_url(&remote));
        }
    }
    if let Ok(out) = git(
        &[
            "git",
            "--no-pager",
            "rev-parse",
            "HEAD",
            "--abbrev-ref",
            "HEAD",
        ],
        repo,
    )
    .await
    {
        let lines: Vec<&str> = out.lines().collect();
        if let [head, branch] = lines.as_slice() {
            meta.head_commit = Some((*head).to_owned());
            meta.branch = Some(if *branch == "HEAD" {
                "DETACHED".to_owned()
            } else {
                (*branch).to_owned()
            });
        }
    }
    meta
}

/// Masks credentials and drops query parameters of a URL (`https://user:tok@host/x?k=v`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = match authority.rsplit_once('@') {
        Some((_, h)) => format!("****@{h}"),
        None => authority.to_owned(),
    };
    let tail = tail.split(['?', '#']).next().unwrap_or_default();
    format!("{scheme}://{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials() {
        assert_eq!(
            redact_url("https://x-access-token:abc@github.com/o/r.git?x=1"),
            "https://****@github.com/o/r.git"
        );
        assert_eq!(
            redact_url("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
    }
}
