//! URL parts as Python's `urllib.parse.urlsplit` reads them (scheme, host, port).

// ---- URLs ---------------------------------------------------------------------------------

/// A URL's port that is not a number in 0..=65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidPort;

/// A URL split like Python's `urllib.parse.urlsplit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// Lower-cased; empty when there is none.
    pub scheme: String,
    pub netloc: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub fragment: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    /// Splits `url` into its parts.
    pub fn split(url: &'a str) -> Self {
        let mut rest = url;
        let mut scheme = String::new();
        if let Some(i) = url.find(':') {
            let candidate = &url[..i];
            let valid = candidate
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && candidate
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if valid {
                scheme = candidate.to_ascii_lowercase();
                rest = &url[i + 1..];
            }
        }
        let mut netloc = "";
        if let Some(after) = rest.strip_prefix("//") {
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            netloc = &after[..end];
            rest = &after[end..];
        }
        let (rest, fragment) = match rest.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (rest, None),
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        UrlParts {
            scheme,
            netloc,
            path,
            query,
            fragment,
        }
    }

    /// Whether the netloc holds user information (`user[:password]@`).
    pub fn has_userinfo(&self) -> bool {
        self.netloc.contains('@')
    }

    pub(super) fn host_port(&self) -> (&'a str, Option<&'a str>) {
        let hostinfo = self.netloc.rsplit_once('@').map_or(self.netloc, |(_, h)| h);
        if let Some(bracketed) = hostinfo.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').unwrap_or((bracketed, ""));
            (host, after.strip_prefix(':'))
        } else {
            match hostinfo.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostinfo, None),
            }
        }
    }

    /// The lower-cased host name, if any.
    pub fn hostname(&self) -> Option<String> {
        let (host, _) = self.host_port();
        (!host.is_empty()).then(|| host.to_ascii_lowercase())
    }

    /// The explicit port: `Ok(None)` without one, `Err` when it is not a valid port.
    pub fn port(&self) -> Result<Option<u16>, InvalidPort> {
        match self.host_port().1 {
            None | Some("") => Ok(None),
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u16>().map(Some).map_err(|_| InvalidPort)
            }
            Some(_) => Err(InvalidPort),
        }
    }
}
