//! Changes between a gallery and the store, in both directions: what a change made to a gallery
//! (enrol, remove, name an unknown group) writes to the store, and how the store's change log is
//! applied to a node's copy. Both sides use the same two operations, so a node that applies its
//! own change from the log ends where the writer did.

use crate::gallery::{Gallery, GalleryError};
use std::collections::HashMap;

/// One operation of the change log.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Adds embeddings (with their sources) to a person, creating them if new.
    Enroll {
        name: String,
        embeddings: Vec<(Vec<f32>, String)>,
    },
    /// Removes a person and every embedding of theirs (a tombstone in the log).
    Remove { name: String },
}

/// The operations that turn `before` into `after`: people gone are removed; people new, or
/// with embeddings appended, are enrolled with what was added; a person whose earlier
/// embeddings changed is removed and enrolled again whole.
pub fn diff(before: &Gallery, after: &Gallery) -> Vec<Op> {
    let old: HashMap<&str, &crate::gallery::Person> =
        before.people.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut ops = Vec::new();
    let kept: std::collections::HashSet<&str> =
        after.people.iter().map(|p| p.name.as_str()).collect();
    for p in &before.people {
        if !kept.contains(p.name.as_str()) {
            ops.push(Op::Remove {
                name: p.name.clone(),
            });
        }
    }
    for p in &after.people {
        let all = |from: usize| -> Vec<(Vec<f32>, String)> {
            p.embeddings[from..]
                .iter()
                .cloned()
                .zip(p.sources[from..].iter().cloned())
                .collect()
        };
        match old.get(p.name.as_str()) {
            None => ops.push(Op::Enroll {
                name: p.name.clone(),
                embeddings: all(0),
            }),
            Some(q) => {
                let n = q.embeddings.len();
                let appended = p.embeddings.len() >= n
                    && p.embeddings[..n] == q.embeddings[..]
                    && p.sources.get(..n) == Some(&q.sources[..]);
                if !appended {
                    ops.push(Op::Remove {
                        name: p.name.clone(),
                    });
                    ops.push(Op::Enroll {
                        name: p.name.clone(),
                        embeddings: all(0),
                    });
                } else if p.embeddings.len() > n {
                    ops.push(Op::Enroll {
                        name: p.name.clone(),
                        embeddings: all(n),
                    });
                }
            }
        }
    }
    ops.retain(|op| !matches!(op, Op::Enroll { embeddings, .. } if embeddings.is_empty()));
    ops
}

/// Applies one operation of the log. An enrolment whose embeddings were all removed since (the
/// person was removed by a later change) and the removal of someone absent change nothing.
pub fn apply(g: &mut Gallery, op: Op) -> Result<(), GalleryError> {
    match op {
        Op::Enroll { name, embeddings } => {
            for (e, source) in embeddings {
                g.enroll(&name, e, source)?;
            }
        }
        Op::Remove { name } => match g.remove(&name) {
            Ok(_) | Err(GalleryError::Unknown { .. }) => {}
            Err(e) => return Err(e),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gallery(people: &[(&str, &[f32])]) -> Gallery {
        let mut g = Gallery::empty(std::path::Path::new("never-written.json"), "m", 2);
        for (name, values) in people {
            for v in *values {
                g.enroll(name, vec![*v, 0.0], format!("{name}{v}")).unwrap();
            }
        }
        g
    }

    fn replay(start: &Gallery, ops: Vec<Op>) -> Gallery {
        let mut g = start.clone();
        for op in ops {
            apply(&mut g, op).unwrap();
        }
        g
    }

    #[test]
    fn enrolments_removals_and_rewrites_replay_to_the_same_gallery() {
        let before = gallery(&[("Ada", &[1.0]), ("Bob", &[2.0]), ("Cy", &[3.0, 4.0])]);
        // Ada gains a photo, Bob goes, Dee is new, Cy's first embedding is replaced.
        let after = gallery(&[("Ada", &[1.0, 1.5]), ("Cy", &[9.0, 4.0]), ("Dee", &[5.0])]);
        let ops = diff(&before, &after);
        assert_eq!(
            ops.iter()
                .filter(|o| matches!(o, Op::Enroll { name, embeddings } if name == "Ada" && embeddings.len() == 1))
                .count(),
            1,
            "only Ada's new photo is written: {ops:?}"
        );
        let got = replay(&before, ops);
        let names = |g: &Gallery| {
            let mut v: Vec<_> = g
                .people
                .iter()
                .map(|p| (p.name.clone(), p.embeddings.clone(), p.sources.clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert_eq!(names(&got), names(&after));
        assert!(diff(&after, &after).is_empty(), "no change, no operation");
    }

    #[test]
    fn a_log_replayed_past_a_later_removal_ends_without_the_person() {
        // The store deleted Ada's embeddings when she was removed: her enrolment comes back
        // empty from the log, then the tombstone.
        let mut g = gallery(&[]);
        for op in [
            Op::Enroll {
                name: "Ada".into(),
                embeddings: vec![],
            },
            Op::Remove { name: "Ada".into() },
            Op::Enroll {
                name: "Bob".into(),
                embeddings: vec![(vec![1.0, 0.0], "b".into())],
            },
        ] {
            apply(&mut g, op).unwrap();
        }
        assert_eq!(g.people.len(), 1);
        assert_eq!(g.people[0].name, "Bob");
    }
}
