//! Raw SQL for the few statements sea-orm cannot build: column arrays (PostgreSQL) or
//! multi-row VALUES lists (SQLite) joined into an UPDATE, and inserts that report which
//! rows they claimed.

use sea_orm::{DbBackend, Statement, Value};

/// A raw SQL statement with placeholders in the dialect of its backend.
pub(crate) struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    pub(crate) fn new(backend: DbBackend) -> Self {
        Self { backend, text: String::new(), values: Vec::new() }
    }

    pub(crate) fn backend(&self) -> DbBackend {
        self.backend
    }

    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `value`, with a cast on PostgreSQL where the type
    /// cannot be inferred (inside VALUES lists).
    pub(crate) fn bind(&mut self, value: impl Into<Value>, pg_type: &str) -> &mut Self {
        self.values.push(value.into());
        if self.backend == DbBackend::Postgres {
            self.text.push_str(&format!("${}", self.values.len()));
            if !pg_type.is_empty() {
                self.text.push_str("::");
                self.text.push_str(pg_type);
            }
        } else {
            self.text.push('?');
        }
        self
    }

    pub(crate) fn statement(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
    }
}
