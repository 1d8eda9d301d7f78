//! A persisted collection: one redb table of records keyed by a string, read whole at start and
//! changed one record per transaction. Consumer groups, alert rules, registry changes and
//! subscriptions keep what the API changes this way.
//!
//! A [`Collection`] names a table and how its records are laid out, like redb's
//! `TableDefinition`, so it can be a `const`; every call takes the [`Db`]. The layouts are the
//! ones the tables have always had: redb records the key and value types of a table and refuses
//! to open it as another, and a data directory written before must load the same.

use std::marker::PhantomData;

use redb::{ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Db, StoreError};

/// How a record is stored in its table's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The record's JSON in a `&[u8]` value.
    JsonBytes,
    /// The record's JSON in a `&str` value.
    JsonText,
    /// A record that serialises as a string (a name), stored as that string in a `&str` value.
    Text,
}

/// A table of `T` records keyed by a string.
#[derive(Debug)]
pub struct Collection<T> {
    table: &'static str,
    encoding: Encoding,
    records: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Collection<T> {
    /// The collection stored in table `table`.
    pub const fn new(table: &'static str, encoding: Encoding) -> Self {
        Self { table, encoding, records: PhantomData }
    }

    /// Every stored record, ordered by key. A record that does not decode is logged and skipped,
    /// so that one bad record does not keep the server from starting.
    ///
    /// # Errors
    /// Storage failures.
    pub fn load(&self, db: &Db) -> Result<Vec<(String, T)>, StoreError> {
        match self.encoding {
            Encoding::JsonBytes => self.load_as(db, self.bytes(), |v| serde_json::from_slice(v)),
            Encoding::JsonText => self.load_as(db, self.text(), |v| serde_json::from_str(v)),
            Encoding::Text => {
                self.load_as(db, self.text(), |v| serde_json::from_value(serde_json::Value::from(v)))
            }
        }
    }

    /// Stores `record` under `key`, replacing what was there.
    ///
    /// # Errors
    /// Storage failures; a record that does not encode (a `Text` record that is not a string).
    pub fn put(&self, db: &Db, key: &str, record: &T) -> Result<(), StoreError> {
        let encode =
            |e: serde_json::Error| StoreError::Encode { table: self.table, key: key.into(), source: e };
        match self.encoding {
            Encoding::JsonBytes => {
                let bytes = serde_json::to_vec(record).map_err(encode)?;
                self.write(db, self.bytes(), key, Some(bytes.as_slice()))
            }
            Encoding::JsonText => {
                let text = serde_json::to_string(record).map_err(encode)?;
                self.write(db, self.text(), key, Some(text.as_str()))
            }
            Encoding::Text => match serde_json::to_value(record).map_err(encode)? {
                serde_json::Value::String(text) => self.write(db, self.text(), key, Some(text.as_str())),
                _ => Err(encode(serde::ser::Error::custom("a text record must serialise as a string"))),
            },
        }
    }

    /// Stores every `(key, record)` of `records` in one transaction (one commit for many
    /// records, e.g. at start-up).
    ///
    /// # Errors
    /// Storage failures; a record that does not encode.
    pub fn put_many(&self, db: &Db, records: &[(String, T)]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut encoded = Vec::with_capacity(records.len());
        for (key, record) in records {
            let encode =
                |e: serde_json::Error| StoreError::Encode { table: self.table, key: key.clone(), source: e };
            let text = match self.encoding {
                Encoding::JsonBytes | Encoding::JsonText => serde_json::to_string(record).map_err(encode)?,
                Encoding::Text => match serde_json::to_value(record).map_err(encode)? {
                    serde_json::Value::String(text) => text,
                    _ => {
                        return Err(encode(serde::ser::Error::custom(
                            "a text record must serialise as a string",
                        )))
                    }
                },
            };
            encoded.push((key.as_str(), text));
        }
        let tx = db.redb()?.begin_write().map_err(|e| db.err(e))?;
        match self.encoding {
            Encoding::JsonBytes => {
                let mut table = tx.open_table(self.bytes()).map_err(|e| db.err(e))?;
                for (key, text) in &encoded {
                    drop(table.insert(*key, text.as_bytes()).map_err(|e| db.err(e))?);
                }
            }
            Encoding::JsonText | Encoding::Text => {
                let mut table = tx.open_table(self.text()).map_err(|e| db.err(e))?;
                for (key, text) in &encoded {
                    drop(table.insert(*key, text.as_str()).map_err(|e| db.err(e))?);
                }
            }
        }
        tx.commit().map_err(|e| db.err(e))
    }

    /// Forgets the record under `key` (nothing happens when there is none).
    ///
    /// # Errors
    /// Storage failures.
    pub fn remove(&self, db: &Db, key: &str) -> Result<(), StoreError> {
        match self.encoding {
            Encoding::JsonBytes => self.write(db, self.bytes(), key, None),
            Encoding::JsonText | Encoding::Text => self.write(db, self.text(), key, None),
        }
    }

    fn bytes(&self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.table)
    }

    fn text(&self) -> TableDefinition<'static, &'static str, &'static str> {
        TableDefinition::new(self.table)
    }

    fn load_as<V: redb::Value + 'static>(
        &self,
        db: &Db,
        def: TableDefinition<'static, &'static str, V>,
        decode: impl for<'a> Fn(V::SelfType<'a>) -> serde_json::Result<T>,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let Some(table) = db.read_table(def)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| db.err(e))? {
            let (k, v) = entry.map_err(|e| db.err(e))?;
            match decode(v.value()) {
                Ok(record) => out.push((k.value().to_string(), record)),
                Err(e) => {
                    tracing::error!(table = self.table, key = %k.value(), error = %e, "Skipping an unreadable stored record")
                }
            }
        }
        Ok(out)
    }

    /// One write transaction: `Some` inserts, `None` removes.
    fn write<V: redb::Value + 'static>(
        &self,
        db: &Db,
        def: TableDefinition<'static, &'static str, V>,
        key: &str,
        value: Option<V::SelfType<'_>>,
    ) -> Result<(), StoreError> {
        let tx = db.redb()?.begin_write().map_err(|e| db.err(e))?;
        {
            let mut table = tx.open_table(def).map_err(|e| db.err(e))?;
            match value {
                Some(v) => drop(table.insert(key, v).map_err(|e| db.err(e))?),
                None => drop(table.remove(key).map_err(|e| db.err(e))?),
            }
        }
        tx.commit().map_err(|e| db.err(e))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Thing {
        n: u32,
    }

    #[test]
    fn records_round_trip_in_each_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let bytes: Collection<Thing> = Collection::new("t_bytes", Encoding::JsonBytes);
        let text: Collection<Option<Thing>> = Collection::new("t_text", Encoding::JsonText);
        let names: Collection<String> = Collection::new("t_names", Encoding::Text);
        assert!(bytes.load(&db).unwrap().is_empty(), "a table never written to is empty");

        bytes.put(&db, "b", &Thing { n: 2 }).unwrap();
        bytes.put(&db, "a", &Thing { n: 1 }).unwrap();
        bytes.put(&db, "a", &Thing { n: 3 }).unwrap();
        text.put(&db, "x", &None).unwrap();
        text.put(&db, "y", &Some(Thing { n: 4 })).unwrap();
        names.put(&db, "g1", &"Group one".to_string()).unwrap();
        names.put(&db, "g2", &"Group two".to_string()).unwrap();
        names.remove(&db, "g2").unwrap();
        names.remove(&db, "absent").unwrap();
        names.put_many(&db, &[("g3".into(), "Three".into()), ("g4".into(), "Four".into())]).unwrap();
        names.remove(&db, "g4").unwrap();
        bytes.put_many(&db, &[("c".into(), Thing { n: 5 })]).unwrap();
        bytes.remove(&db, "c").unwrap();

        let loaded: BTreeMap<_, _> = bytes.load(&db).unwrap().into_iter().collect();
        assert_eq!(loaded, BTreeMap::from([("a".into(), Thing { n: 3 }), ("b".into(), Thing { n: 2 })]));
        assert_eq!(text.load(&db).unwrap(), [("x".into(), None), ("y".into(), Some(Thing { n: 4 }))]);
        assert_eq!(
            names.load(&db).unwrap(),
            [("g1".to_string(), "Group one".to_string()), ("g3".to_string(), "Three".to_string())]
        );
    }

    /// The layouts the tables had before this helper: a data directory from then loads the same.
    #[test]
    fn reads_tables_written_the_old_way() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let tx = db.redb().unwrap().begin_write().unwrap();
        {
            let mut t = tx.open_table(TableDefinition::<&str, &str>::new("t_names")).unwrap();
            t.insert("g1", "Group one").unwrap();
            let mut t = tx.open_table(TableDefinition::<&str, &[u8]>::new("t_bytes")).unwrap();
            t.insert("a", br#"{"n":1}"#.as_slice()).unwrap();
            t.insert("bad", b"not json".as_slice()).unwrap();
            let mut t = tx.open_table(TableDefinition::<&str, &str>::new("t_text")).unwrap();
            t.insert("x", "null").unwrap();
        }
        tx.commit().unwrap();
        let names: Collection<String> = Collection::new("t_names", Encoding::Text);
        let bytes: Collection<Thing> = Collection::new("t_bytes", Encoding::JsonBytes);
        let text: Collection<Option<Thing>> = Collection::new("t_text", Encoding::JsonText);
        assert_eq!(names.load(&db).unwrap(), [("g1".to_string(), "Group one".to_string())]);
        assert_eq!(
            bytes.load(&db).unwrap(),
            [("a".to_string(), Thing { n: 1 })],
            "the bad record is skipped"
        );
        assert_eq!(text.load(&db).unwrap(), [("x".to_string(), None)]);
    }

    #[test]
    fn a_text_record_must_be_a_string() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let c: Collection<Thing> = Collection::new("t", Encoding::Text);
        assert!(matches!(c.put(&db, "k", &Thing { n: 1 }), Err(StoreError::Encode { .. })));
    }
}
