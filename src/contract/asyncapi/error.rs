//! Why no AsyncAPI document can be made.

use crate::template::TemplateError;

/// Why no document can be made (only for settings that `validate` would refuse).
#[derive(Debug, thiserror::Error)]
pub enum AsyncApiError {
    #[error("sink {sink}: invalid destination template: {message}")]
    Destination { sink: String, message: String },
    #[error("sink {sink}: invalid key template")]
    Key {
        sink: String,
        #[source]
        source: TemplateError,
    },
    /// The message never repeats the URL (it may hold a password).
    #[error("sink {sink}: the broker URL does not parse: {message}")]
    Url { sink: String, message: String },
}
