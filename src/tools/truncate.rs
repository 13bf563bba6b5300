//! Middle truncation of long tool output, keeping the head and the tail.

/// The notice put where text was cut out (no saved copy).
pub(crate) const CLIPPED_NOTICE: &str = "<response clipped><NOTE>Due to the max output limit, \
only part of the full response has been shown to you.</NOTE>";

/// Cuts the middle of `content` so that it fits in `limit` characters, inserting `notice`.
/// Returns `content` unchanged when it already fits.
pub fn maybe_truncate(content: &str, limit: usize, notice: &str) -> String {
    let total = content.chars().count();
    if total <= limit {
        return content.to_owned();
    }
    let notice_len = notice.chars().count();
    if notice_len >= limit {
        return notice.chars().take(limit).collect();
    }
    let available = limit - notice_len;
    let head = available.div_ceil(2);
    let tail = available - head;
    let head_end = byte_index(content, head);
    let tail_start = byte_index(content, total - tail);
    format!("{}{notice}{}", &content[..head_end], &content[tail_start..])
}

/// The byte offset of the `n`th character.
pub(crate) fn byte_index(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_head_and_tail_within_the_limit() {
        let text: String = (0..1000).map(|i| format!("{i}\n")).collect();
        let out = maybe_truncate(&text, 200, CLIPPED_NOTICE);
        assert_eq!(out.chars().count(), 200);
        assert!(out.starts_with("0\n1\n"));
        assert!(out.ends_with("999\n"));
        assert!(out.contains("<response clipped>"));
        assert_eq!(maybe_truncate("short", 200, CLIPPED_NOTICE), "short");
        let wide = "é".repeat(500);
        assert_eq!(
            maybe_truncate(&wide, 300, CLIPPED_NOTICE).chars().count(),
            300
        );
    }
}
