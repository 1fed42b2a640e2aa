//! Reading a gallery file as a stream: each person is handed to the caller as soon as it is
//! parsed, before the next is read, so a caller that needs only some people's embeddings (an
//! index loaded from its folder already holds the others) never holds them all at once.

use super::{Person, SyncMark};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use std::fmt;

/// The file's fields but its people, which went to the caller.
#[derive(Debug)]
pub(super) struct FileFormat {
    pub format: String,
    pub version: u32,
    pub model: String,
    pub dim: usize,
    pub sync: Option<SyncMark>,
}

/// Parses a gallery file from `reader`, handing every person to `each` as it is read.
pub(super) fn read(
    reader: impl std::io::Read,
    each: &mut dyn FnMut(Person),
) -> Result<FileFormat, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    let f = FileSeed(each).deserialize(&mut de)?;
    de.end()?;
    Ok(f)
}

const FIELDS: &[&str] = &["format", "version", "model", "dim", "people", "sync"];

struct FileSeed<'a>(&'a mut dyn FnMut(Person));

impl<'de> DeserializeSeed<'de> for FileSeed<'_> {
    type Value = FileFormat;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<FileFormat, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FileSeed<'_> {
    type Value = FileFormat;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a vigil gallery (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<FileFormat, A::Error> {
        let (mut format, mut version, mut model, mut dim) = (None, None, None, None);
        let (mut people, mut sync) = (None, None);
        fn once<T, E: de::Error>(slot: &mut Option<T>, v: T, name: &'static str) -> Result<(), E> {
            if slot.replace(v).is_some() {
                return Err(E::duplicate_field(name));
            }
            Ok(())
        }
        while let Some(key) = m.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "format" => once(&mut format, m.next_value::<String>()?, "format")?,
                "version" => once(&mut version, m.next_value::<u32>()?, "version")?,
                "model" => once(&mut model, m.next_value::<String>()?, "model")?,
                "dim" => once(&mut dim, m.next_value::<usize>()?, "dim")?,
                "people" => {
                    // Refused before a second list is handed over.
                    once(&mut people, (), "people")?;
                    m.next_value_seed(PeopleSeed(&mut *self.0))?
                }
                "sync" => once(&mut sync, m.next_value::<Option<SyncMark>>()?, "sync")?,
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        Ok(FileFormat {
            format: format.ok_or_else(|| de::Error::missing_field("format"))?,
            version: version.ok_or_else(|| de::Error::missing_field("version"))?,
            model: model.ok_or_else(|| de::Error::missing_field("model"))?,
            dim: dim.ok_or_else(|| de::Error::missing_field("dim"))?,
            sync: {
                people.ok_or_else(|| de::Error::missing_field("people"))?;
                sync.flatten()
            },
        })
    }
}

struct PeopleSeed<'a>(&'a mut dyn FnMut(Person));

impl<'de> DeserializeSeed<'de> for PeopleSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PeopleSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of people")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        while let Some(p) = s.next_element::<Person>()? {
            (self.0)(p);
        }
        Ok(())
    }
}
