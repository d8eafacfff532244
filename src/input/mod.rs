//! What a client may ask of a link: the JSON fields of a create or a patch,
//! checked one way for every door (the API, its batch endpoint and
//! `shortd import`). A refusal names the field and the reason; the HTTP
//! edge turns it into a problem+json body, the import into a line error.
//!
//! `fields` is the one validation; `export` (the import's common line) and
//! `create` (the API's common body) are fast paths that answer the same
//! way or hand the request to it.

mod create;
mod export;
mod fields;

pub use create::plain_create;
pub use export::{export_line, Exported};
pub use fields::{new_link, patch, Blocks, Invalid, Rules, Source, MAX_CLICKS, MAX_TTL_SECONDS};
