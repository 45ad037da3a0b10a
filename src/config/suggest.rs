//! "Did you mean …?" for misspelt configuration keys: the closest known name, when it is close
//! enough that the suggestion is more likely right than noise.

/// The candidate nearest to `word` by edit distance, if within about a third of its length.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean "x"?)`, or nothing; to append to an error message.
pub(crate) fn hint(suggestion: Option<&str>) -> String {
    suggestion.map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default()
}

/// Levenshtein distance over chars; keys are short, so the quadratic row is fine.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_close_name_only() {
        let keys = ["ping_interval", "pong_timeout", "presence", "history_size"];
        assert_eq!(closest("ping_intreval", keys), Some("ping_interval"));
        assert_eq!(closest("histroy_size", keys), Some("history_size"));
        assert_eq!(closest("presense", keys), Some("presence"));
        assert_eq!(closest("colour", keys), None);
        assert_eq!(hint(Some("a")), " (did you mean \"a\"?)");
        assert_eq!(hint(None), "");
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("same", "same"), 0);
    }
}
