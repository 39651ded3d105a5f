//! The contract with the services that subscribe: what they can read with their own tools.
//!
//! * [`asyncapi`]: `callbridge asyncapi`, an AsyncAPI 3.0 document of what one deployment
//!   publishes (channels from the same enumeration `validate --connect` checks, the servers
//!   without credentials, one message per event kind with the committed JSON Schema and each
//!   protocol's CloudEvents binding as the sinks write it).
//! * [`compat`]: the compatibility rules of the event's JSON Schema within one major version
//!   (docs/events.md, "Compatibility"), checked by a test against the committed snapshot of
//!   each version's contract (`docs/schema/contract/`).
//!
//! Nothing here is on the data path: it reads the settings and the event's types, and depends
//! on `config`, `event`, `preflight` and the sinks' encoders, which never depend on it.

pub mod asyncapi;
pub mod compat;
