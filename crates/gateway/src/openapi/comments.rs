//! The proto comments, as descriptions: build.rs keeps the source info in the descriptor
//! set, and each descriptor's path finds its leading comment there.

use std::collections::HashMap;

use prost_reflect::DescriptorPool;

/// Leading comments by file and descriptor path.
#[derive(Debug, Default)]
pub(super) struct Comments(HashMap<(String, Vec<i32>), String>);

impl Comments {
    pub(super) fn new(pool: &DescriptorPool) -> Self {
        let mut comments = HashMap::new();
        for file in pool.files() {
            let Some(info) = &file.file_descriptor_proto().source_code_info else { continue };
            for location in &info.location {
                if let Some(text) = location.leading_comments.as_deref() {
                    comments.insert((file.name().to_owned(), location.path.clone()), clean(text));
                }
            }
        }
        Self(comments)
    }

    /// The comment above the descriptor at `path` of `file`.
    pub(super) fn of(&self, file: &str, path: &[i32]) -> Option<&str> {
        self.0.get(&(file.to_owned(), path.to_vec())).map(String::as_str)
    }
}

/// The comment without the space after each `//`.
fn clean(text: &str) -> String {
    text.lines().map(|line| line.strip_prefix(' ').unwrap_or(line)).collect::<Vec<_>>().join("\n").trim().to_owned()
}
