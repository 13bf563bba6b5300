//! Query strings and percent-encoding, through the maintained `form_urlencoded` and
//! `percent-encoding` crates (the ones axum's `Query` extractor and `url` use), with the
//! escaping rules of Python's `urllib.parse` where the reference's output is matched.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What Python's `quote` never escapes: letters, digits and `_.-~`.
const PY_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');

/// What a URL path may hold unescaped (RFC 3986 `pchar`, `/`, and `%` kept as is).
const PATH_KEEP: &AsciiSet = &PY_UNRESERVED
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@')
    .remove(b'/')
    .remove(b'%');

/// The decoded `key=value` pairs of a query string (`application/x-www-form-urlencoded`):
/// repeated keys kept in order, `+` read as a space, `%XX` decoded, bad UTF-8 replaced.
pub fn query_pairs(raw: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect()
}

/// The last value of `key` among `pairs` (a repeated parameter: the last wins, as Starlette's
/// `QueryParams.get`).
pub fn last_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Python's `urllib.parse.unquote`: `%XX` escapes decoded, the bytes read as UTF-8 (bad ones
/// replaced); `+` stays.
pub fn unquote(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Python's `urllib.parse.quote(value, safe)`: every byte escaped but letters, digits, `_.-~`
/// and the ASCII characters of `safe`.
pub fn quote(value: &str, safe: &str) -> String {
    let mut out = utf8_percent_encode(value, PY_UNRESERVED).to_string();
    // Every `%` of the output starts an escape (a `%` of the input is `%25`), so putting a
    // safe character back for its escape cannot touch anything else.
    for b in safe
        .bytes()
        .filter(|b| b.is_ascii_punctuation() && !b"_.-~".contains(b))
    {
        out = out.replace(&format!("%{b:02X}"), &char::from(b).to_string());
    }
    out
}

/// Python's `urllib.parse.quote_plus`: as [`quote`] with nothing extra safe, spaces as `+`.
pub fn quote_plus(value: &str) -> String {
    value
        .split(' ')
        .map(|part| utf8_percent_encode(part, PY_UNRESERVED).to_string())
        .collect::<Vec<_>>()
        .join("+")
}

/// A decoded path made safe for a URL again: characters a path may not hold are escaped, `%`
/// is kept (the upstream decodes it).
pub fn encode_path(path: &str) -> String {
    utf8_percent_encode(path, PATH_KEEP).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_keep_repeats_and_decode_like_a_form() {
        assert_eq!(
            query_pairs("ids=a&ids=b&&x=%2Fp+q%zz&flag"),
            vec![
                ("ids".into(), "a".into()),
                ("ids".into(), "b".into()),
                ("x".into(), "/p q%zz".into()),
                ("flag".into(), String::new()),
            ]
        );
    }

    #[test]
    fn escaping_follows_python() {
        assert_eq!(unquote("a+b%2F%C3%BC%4"), "a+b/ü%4");
        assert_eq!(quote("a b/ü~*", ""), "a%20b%2F%C3%BC~%2A");
        assert_eq!(quote("dir/a b", "/"), "dir/a%20b");
        assert_eq!(quote_plus("a b+c"), "a+b%2Bc");
        assert_eq!(encode_path("a b/ü%20?#"), "a%20b/%C3%BC%20%3F%23");
    }
}
