//! How a user's value appears in a message: at most [`MAX_ECHO`] characters, cut with an
//! ellipsis. A gallery with a 1 GB person name once made a 1 GB error line (and 3.3 GB of
//! memory); every error that repeats a name, an id, a URL or a value goes through [`echo`].

use std::borrow::Cow;

/// Most characters of a user's value repeated in an error message.
pub const MAX_ECHO: usize = 200;

/// `v` as is when short, else its first [`MAX_ECHO`] characters, `…` and how long it was.
pub fn echo(v: &str) -> Cow<'_, str> {
    clip(v, MAX_ECHO)
}

/// `v` cut to `max` characters (with `…` and the full length) when longer.
pub fn clip(v: &str, max: usize) -> Cow<'_, str> {
    match v.char_indices().nth(max) {
        Some((i, _)) => Cow::Owned(format!("{}… ({} bytes in all)", &v[..i], v.len())),
        None => Cow::Borrowed(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_and_short_ones_kept() {
        assert_eq!(echo("Ada"), "Ada");
        let long = "é".repeat(1_000_000);
        let e = echo(&long);
        assert!(e.chars().count() < MAX_ECHO + 40, "{}", e.len());
        assert!(e.ends_with("… (2000000 bytes in all)"), "{e}");
    }
}
