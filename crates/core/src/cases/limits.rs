//! Owners' shared rate limits: who may read and replace them.

use crate::{
    error::Result,
    policy::{self, Action, Caller},
};

/// The owner whose shared limits a caller reads: the one named, or its own; whoever may
/// read the owner's keys sees them.
pub fn limits_owner(caller: &Caller, owner: String) -> Result<String> {
    let owner = if owner.is_empty() { caller.owner().to_owned() } else { owner };
    policy::authorize_owner(caller, Action::ReadKeys, &owner)?;
    Ok(owner)
}

/// Refuses a caller that may not replace `owner`'s shared limits: replacing them may raise
/// one, which takes the right to adjust credits.
pub fn admit_set_limits(caller: &Caller, owner: &str) -> Result<()> {
    policy::authorize_owner(caller, Action::AdjustCredits, owner)
}
