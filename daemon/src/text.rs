//! What text from people may contain: the one rule for nicknames, channel titles and
//! messages, used by the store (which keeps names and titles) and the chat (messages).
//!
//! Control characters are never shown. Invisible formatting characters (Unicode's `Cf`
//! category: bidi overrides and isolates, zero-width spaces, word joiners, tag characters)
//! are refused: a right-to-left override (U+202E) after `Alice` makes `Alice` + `ecilA` read as
//! `AliceAlice`, and invisible characters make two different names look the same. The two
//! joiners that writing needs (U+200C in Persian and Indic scripts, U+200D inside emoji
//! sequences) are allowed: they change how text joins, not which way it runs or what shows.

/// Whether `c` is an invisible formatting character we refuse (Unicode 15 `Cf`, less the
/// two joiners above).
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'
            | '\u{200E}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// Why a piece of text cannot be shown as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    Control,
    Invisible,
}

impl Unfit {
    pub fn reason(self) -> &'static str {
        match self {
            Unfit::Control => "contains control characters",
            Unfit::Invisible => {
                "contains invisible formatting characters (direction overrides, zero-width spaces)"
            }
        }
    }
}

/// A name or a title: no control characters, no invisible formatting.
pub fn check_name(text: &str) -> Result<(), Unfit> {
    if text.chars().any(char::is_control) {
        return Err(Unfit::Control);
    }
    if text.chars().any(is_invisible_format) {
        return Err(Unfit::Invisible);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_and_invisibles_are_refused_joiners_are_not() {
        assert_eq!(check_name("Alice"), Ok(()));
        assert_eq!(check_name("앨리스 🐱"), Ok(()));
        assert_eq!(
            check_name("👩\u{200D}👩\u{200D}👧"),
            Ok(()),
            "an emoji family"
        );
        assert_eq!(check_name("می\u{200C}خواهم"), Ok(()), "Persian needs ZWNJ");
        for bad in [
            "Alice\u{202E}ecilA",
            "Al\u{200B}ice",
            "\u{2066}Alice\u{2069}",
            "Alice\u{FEFF}",
            "A\u{E0041}",
            "\u{061C}Alice",
        ] {
            assert_eq!(check_name(bad), Err(Unfit::Invisible), "{bad:?}");
        }
        assert_eq!(check_name("Ali\u{0007}ce"), Err(Unfit::Control));
    }
}
