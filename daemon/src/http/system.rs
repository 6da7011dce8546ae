//! The box itself, for the venue's admin: what the transcoding ladder's probe found and how
//! each live channel's rungs are doing.

use super::{ApiError, AppState, CurrentUser};
use crate::media::ladder::Overview;
use crate::store::Role;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

/// `GET /api/system/transcode` (admins): the startup probe's choice and every rejection
/// with its reason, and each live channel's rungs (encoder, state, why shed).
pub async fn transcode(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
) -> Result<Json<Overview>, ApiError> {
    if claims.role != Role::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the venue's admins see the box's encoders",
        ));
    }
    Ok(Json(state.ladder.overview()))
}
