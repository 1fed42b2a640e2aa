//! Maps field paths (`streams[0].url`) to where they stand in the YAML text, so that problems
//! found after deserialising still point at a line and column.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line and column, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Positions of every node in a YAML document, by field path.
#[derive(Debug, Default, Clone)]
pub struct Locator {
    nodes: HashMap<String, Pos>,
    /// Keys given twice in one mapping: the path and where the second one stands (serde's
    /// "duplicate field" error has no position of its own).
    repeated: Vec<(String, Pos)>,
}

enum Container {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Container>,
    nodes: HashMap<String, Pos>,
    repeated: Vec<(String, Pos)>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Builder {
    /// The path of the node that starts now, or `None` when it is a mapping key.
    fn next_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Container::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
            Some(Container::Map { path, key }) => key.take().map(|k| join(path, &k)),
        }
    }

    fn pos(mark: Marker) -> Pos {
        // yaml-rust2 columns are 0-based in practice for block content; normalise to 1-based.
        Pos {
            line: mark.line(),
            col: mark.col() + 1,
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => match self.next_path() {
                Some(path) => {
                    self.nodes.entry(path).or_insert(Self::pos(mark));
                }
                None => {
                    if let Some(Container::Map { key, path }) = self.stack.last_mut() {
                        let full = join(path, &value);
                        if self.nodes.contains_key(&full) {
                            self.repeated.push((full, Self::pos(mark)));
                        }
                        *key = Some(value);
                    }
                }
            },
            Event::Alias(_) => {
                if let Some(path) = self.next_path() {
                    self.nodes.entry(path).or_insert(Self::pos(mark));
                }
            }
            Event::MappingStart(..) => {
                // A complex (non-scalar) key has no path of its own; its children are ignored.
                let path = self.next_path().unwrap_or_else(|| "?".into());
                self.nodes.entry(path.clone()).or_insert(Self::pos(mark));
                self.stack.push(Container::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.next_path().unwrap_or_else(|| "?".into());
                self.nodes.entry(path.clone()).or_insert(Self::pos(mark));
                self.stack.push(Container::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

impl Locator {
    /// Indexes `text`. Text that does not parse gives an empty locator: the deserialiser reports
    /// the syntax error itself, with its own position.
    pub fn new(text: &str) -> Locator {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return Locator::default();
        }
        Locator {
            nodes: builder.nodes,
            repeated: builder.repeated,
        }
    }

    /// Where the key `name` stands below `under` (`faces` finds `faces.detector.bogus`): the
    /// full path and position of the first such key at or after `from`, for serde errors that name a field but
    /// lose the path to it (an internally tagged enum buffers its content).
    pub fn find_key(&self, under: &str, name: &str, from: Pos) -> Option<(String, Pos)> {
        let suffix = format!(".{name}");
        self.nodes
            .iter()
            .filter(|(p, pos)| {
                let inside = under.is_empty() || p.starts_with(under);
                let named = p.ends_with(&suffix) || (under.is_empty() && p.as_str() == name);
                inside && named && (pos.line, pos.col) >= (from.line, from.col)
            })
            .min_by_key(|(_, pos)| (pos.line, pos.col))
            .map(|(p, pos)| (p.clone(), *pos))
    }

    /// The second occurrence of the key `name` in a mapping at or below `under`.
    pub fn find_repeated(&self, under: &str, name: &str) -> Option<(String, Pos)> {
        let suffix = format!(".{name}");
        self.repeated
            .iter()
            .find(|(p, _)| {
                (under.is_empty() || p.starts_with(under))
                    && (p.ends_with(&suffix) || p.as_str() == name)
            })
            .cloned()
    }

    /// Where `path` stands, or failing that its nearest ancestor that does (a missing key is
    /// reported at the mapping that lacks it).
    pub fn find(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.nodes.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => {
                    return self
                        .nodes
                        .get("")
                        .copied()
                        .unwrap_or(Pos { line: 1, col: 1 })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "streams:\n  - id: a\n    url: x.mp4\n  - id: b\n    url: y.mp4\naction:\n  smoother:\n    start_threshold: 2\n";

    #[test]
    fn finds_nested_fields_and_list_items() {
        let loc = Locator::new(DOC);
        assert_eq!(loc.find("streams[1].url"), Pos { line: 5, col: 10 });
        assert_eq!(loc.find("streams[0].id"), Pos { line: 2, col: 9 });
        assert_eq!(
            loc.find("action.smoother.start_threshold"),
            Pos { line: 8, col: 22 }
        );
    }

    #[test]
    fn a_missing_field_points_at_its_parent() {
        let loc = Locator::new(DOC);
        assert_eq!(
            loc.find("action.smoother.end_threshold"),
            loc.find("action.smoother")
        );
        assert_eq!(loc.find("streams[0].model"), Pos { line: 2, col: 7 });
    }
}
