//! Scope queries parsed once per distinct text: a verification names its query as text on
//! every call, and an API asks the same few queries again and again.

use std::sync::Arc;

use keyward_core::{error::Result, scope_query::Query};
use quick_cache::sync::Cache;

/// Distinct query texts kept parsed; beyond it the least used are parsed again when asked.
const PARSED_QUERIES: usize = 1024;

/// The parsed queries by their text.
#[derive(Debug)]
pub(crate) struct Queries {
    parsed: Cache<String, Arc<Query>>,
}

impl Queries {
    pub(crate) fn new() -> Self {
        Self { parsed: Cache::new(PARSED_QUERIES) }
    }

    /// The query `text` parsed, `None` for no query; a malformed one is INVALID_ARGUMENT
    /// naming `scope_query` and the position of its fault (and is not kept).
    pub(crate) fn parse(&self, text: &str) -> Result<Option<Arc<Query>>> {
        if text.is_empty() {
            return Ok(None);
        }
        if let Some(query) = self.parsed.get(text) {
            return Ok(Some(query));
        }
        let query = Arc::new(Query::parse("scope_query", text)?);
        self.parsed.insert(text.to_owned(), Arc::clone(&query));
        Ok(Some(query))
    }
}
