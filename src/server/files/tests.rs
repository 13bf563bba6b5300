use super::response::{content_disposition, parse_range, py_float, RangeError};

#[test]
fn ranges_parse_like_starlette() {
    assert!(matches!(parse_range("bytes=0-9", 100), Ok(r) if r == vec![(0, 10)]));
    assert!(matches!(parse_range("bytes=-10", 100), Ok(r) if r == vec![(90, 100)]));
    assert!(matches!(parse_range("bytes=90-", 100), Ok(r) if r == vec![(90, 100)]));
    assert!(matches!(parse_range("bytes=0-999", 100), Ok(r) if r == vec![(0, 100)]));
    assert!(matches!(
        parse_range("bytes=200-300", 100),
        Err(RangeError::Unsatisfiable)
    ));
    assert!(matches!(
        parse_range("items=0-1", 100),
        Err(RangeError::Malformed(_))
    ));
    assert!(
        matches!(parse_range("bytes=0-1,1-5,10-20", 100), Ok(r) if r == vec![(0, 6), (10, 21)])
    );
}

#[test]
fn floats_print_like_python() {
    assert_eq!(py_float(1700000000.0), "1700000000.0");
    assert_eq!(py_float(1795609409.1998625), "1795609409.1998625");
}

#[test]
fn disposition_quotes_unusual_names() {
    assert_eq!(
        content_disposition("up.txt"),
        "attachment; filename=\"up.txt\""
    );
    assert_eq!(
        content_disposition("a b.txt"),
        "attachment; filename*=utf-8''a%20b.txt"
    );
}
