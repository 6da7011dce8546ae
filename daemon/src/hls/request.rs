//! What a player's media playlist request asks for: blocking reload to a segment or a part
//! (`_HLS_msn`, `_HLS_part`) and delta updates (`_HLS_skip`), per RFC 8216bis §6.2.5.
//!
//! Pure: the query as the HTTP layer decoded it in, a verdict out. The HTTP layer does
//! the waiting; this decides whether a request is well formed and reachable.

use super::{canonical_number, Packaged, Packaging};
use std::collections::HashMap;

/// A delta update's kind: `YES` skips old segments, `v2` also old date-ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Yes,
    V2,
}

/// A media playlist request, understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlaylistRequest {
    /// Hold the answer until this segment (or its part) exists.
    pub msn: Option<u64>,
    pub part: Option<usize>,
    pub skip: Option<Skip>,
}

/// Why a playlist request is refused (400): each says what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{0} must be a whole number")]
    NotANumber(&'static str),
    #[error("_HLS_skip={0}: expected YES or v2")]
    BadSkip(String),
    #[error("_HLS_part needs _HLS_msn")]
    PartWithoutMsn,
    #[error("_HLS_msn={msn} is too far ahead of the live edge (segment {newest})")]
    TooFar { msn: u64, newest: u64 },
}

impl PlaylistRequest {
    /// The request's query parameters; others are ignored, as the RFC asks.
    pub fn parse(query: &HashMap<String, String>) -> Result<PlaylistRequest, RequestError> {
        let number = |key: &'static str| -> Result<Option<u64>, RequestError> {
            query
                .get(key)
                .map(|v| canonical_number::<u64>(v).ok_or(RequestError::NotANumber(key)))
                .transpose()
        };
        let msn = number("_HLS_msn")?;
        let part = number("_HLS_part")?.map(|p| usize::try_from(p).unwrap_or(usize::MAX));
        let skip = match query.get("_HLS_skip").map(String::as_str) {
            None => None,
            Some("YES") => Some(Skip::Yes),
            Some("v2") => Some(Skip::V2),
            Some(other) => return Err(RequestError::BadSkip(other.to_string())),
        };
        if msn.is_none() && part.is_some() {
            return Err(RequestError::PartWithoutMsn);
        }
        Ok(PlaylistRequest { msn, part, skip })
    }
}

impl Packaged {
    /// Refuses a blocking request for what cannot come soon: more than two segments, or
    /// more parts than the Advance Part Limit, past the end of the playlist (RFC 8216bis).
    /// An ended playlist answers anything at once.
    pub fn check_reach(&self, request: &PlaylistRequest) -> Result<(), RequestError> {
        let (Some(msn), Packaging::LowLatency { part_target }) = (request.msn, self.packaging)
        else {
            return Ok(());
        };
        let Some(newest) = self.last_complete_sequence() else {
            return Ok(());
        };
        let advance_part_limit = if part_target < 1.0 {
            (3.0 / part_target).floor() as usize
        } else {
            3
        };
        // "The last Media Segment" is the last complete one; parts count from the last
        // Partial Segment, wherever it is.
        let part_too_far = match (self.newest_part(), request.part) {
            (Some((sequence, index)), Some(p)) => {
                msn == sequence && p > index.saturating_add(advance_part_limit)
            }
            _ => false,
        };
        let too_far = msn > newest.saturating_add(2) || part_too_far;
        if too_far && !self.is_ended() {
            return Err(RequestError::TooFar { msn, newest });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_request_is_read_as_the_rfc_has_it() {
        assert_eq!(
            PlaylistRequest::parse(&query(&[
                ("_HLS_msn", "7"),
                ("_HLS_part", "2"),
                ("_HLS_skip", "v2")
            ])),
            Ok(PlaylistRequest {
                msn: Some(7),
                part: Some(2),
                skip: Some(Skip::V2)
            })
        );
        assert_eq!(
            PlaylistRequest::parse(&query(&[("x", "1")])),
            Ok(PlaylistRequest::default())
        );
        for (bad, error) in [
            (
                vec![("_HLS_msn", "07")],
                RequestError::NotANumber("_HLS_msn"),
            ),
            (
                vec![("_HLS_msn", "-1")],
                RequestError::NotANumber("_HLS_msn"),
            ),
            (
                vec![("_HLS_msn", "1"), ("_HLS_part", "99999999999999999999")],
                RequestError::NotANumber("_HLS_part"),
            ),
            (vec![("_HLS_part", "1")], RequestError::PartWithoutMsn),
            (
                vec![("_HLS_skip", "yes")],
                RequestError::BadSkip("yes".into()),
            ),
        ] {
            assert_eq!(PlaylistRequest::parse(&query(&bad)), Err(error), "{bad:?}");
        }
    }
}
