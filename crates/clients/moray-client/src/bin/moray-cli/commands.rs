//! What each command does and prints: node-moray's output, so scripts written
//! against it (`listbuckets | json -ga name`) keep working.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use futures::StreamExt;
use moray_client::{
    Bucket, BucketConfig, BucketOptions, EtagCondition, FindOptions, IndexDef, MorayClient,
    MorayError, Sort, SortOrder,
};
use serde::Serialize;
use serde_json::Value;

use crate::args::Command;

/// A failed command: printed as `moray-cli: <text>`, exit status 1.
#[derive(Debug)]
pub struct Failure(pub String);

impl From<MorayError> for Failure {
    fn from(e: MorayError) -> Self {
        Failure(format!("{}: {}", e.name(), e.message()))
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure(format!("writing output: {e}"))
    }
}

type Outcome = Result<(), Failure>;

pub async fn run(moray: &MorayClient, command: Command) -> Outcome {
    match command {
        Command::Putbucket {
            index,
            unique,
            version,
            stdin,
            track_modification,
            bucket,
        } => {
            let config = if stdin {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| Failure(format!("reading stdin: {e}")))?;
                config_from_json(&text)?
            } else {
                if track_modification {
                    return Err(trackmod_unsupported());
                }
                config_from_flags(&index, &unique, version)
            };
            moray.put_bucket(&bucket, &config).await?;
            Ok(())
        }
        Command::Getbucket { bucket } => {
            let bucket = moray.get_bucket(&bucket).await?;
            print_pretty(&BucketView::from(&bucket))
        }
        Command::Listbuckets => {
            let buckets = moray.list_buckets().await?;
            let views: Vec<BucketView> = buckets.iter().map(BucketView::from).collect();
            print_pretty(&views)
        }
        Command::Delbucket { bucket } => Ok(moray.delete_bucket(&bucket).await?),
        Command::Putobject {
            data,
            etag,
            bucket,
            key,
        } => {
            let value = parse_data(data.as_deref())?;
            let etag = match etag.as_deref() {
                None => EtagCondition::Any,
                Some("null") => EtagCondition::MustNotExist,
                Some(etag) => EtagCondition::Is(etag.to_string()),
            };
            moray.put_object(&bucket, &key, &value, etag).await?;
            Ok(())
        }
        Command::Getobject {
            compact,
            no_cache: _,
            bucket,
            key,
        } => match moray.get_object(&bucket, &key).await? {
            Some(object) => print_json(&object, compact),
            None => Err(Failure(format!(
                "ObjectNotFoundError: {bucket}/{key} does not exist"
            ))),
        },
        Command::Delobject { bucket, key } => Ok(moray
            .delete_object(&bucket, &key, EtagCondition::Any)
            .await?),
        Command::Findobjects {
            asc,
            desc,
            compact,
            require_indexes,
            limit,
            no_count,
            offset,
            sql_only,
            bucket,
            filter,
        } => {
            let sort = match (asc, desc) {
                (Some(attribute), _) => vec![Sort {
                    attribute,
                    order: SortOrder::Asc,
                }],
                (None, Some(attribute)) => vec![Sort {
                    attribute,
                    order: SortOrder::Desc,
                }],
                (None, None) => Vec::new(),
            };
            let options = FindOptions {
                limit,
                offset: offset.unwrap_or(0),
                sort,
                no_count,
                require_indexes,
                ..Default::default()
            };
            if sql_only {
                let sql = moray.find_objects_sql(&bucket, &filter, &options).await?;
                return print_json(&sql, compact);
            }
            let mut objects = moray
                .find_objects_stream(&bucket, &filter, &options)
                .await?;
            while let Some(object) = objects.next().await {
                print_json(&object?, compact)?;
            }
            Ok(())
        }
        Command::Delmany {
            limit,
            offset,
            bucket,
            filter,
        } => {
            let options = FindOptions {
                limit,
                offset: offset.unwrap_or(0),
                ..Default::default()
            };
            let count = moray.delete_many(&bucket, &filter, &options).await?;
            print_line(&format!("{count} records deleted"))
        }
        Command::Updatemany {
            data,
            limit,
            bucket,
            filter,
        } => {
            let fields = parse_data(data.as_deref())?;
            let options = FindOptions {
                limit,
                ..Default::default()
            };
            let r = moray
                .update_objects(&bucket, &fields, &filter, &options)
                .await?;
            // node-moray prints the result with console.log, i.e. util.inspect.
            print_line(&format!("{{ count: {}, etag: '{}' }}", r.count, r.etag))
        }
        Command::Reindexobjects { bucket, count } => {
            reindex(moray, &bucket, count.unwrap_or(100)).await
        }
        Command::Sql { sql } => {
            for row in moray.sql(&sql, &[]).await? {
                print_pretty(&row)?;
            }
            Ok(())
        }
        Command::Ping { deep, wait: _ } => Ok(moray.ping(deep).await?),
        Command::Version => {
            let version = moray.version().await?;
            print_line(&version.version.to_string())
        }
        Command::Gettokens => Err(Failure("Operation not supported".to_string())),
        Command::Watch { since, bucket } => {
            let mut changes = moray.watch(&bucket, since).await?;
            while let Some(change) = changes.next().await {
                print_json(&change?, true)?;
            }
            Ok(())
        }
    }
}

/// node-moray's reindexobjects: progress on stderr, until nothing is left.
async fn reindex(moray: &MorayClient, bucket: &str, count: u32) -> Outcome {
    let info = moray.get_bucket(bucket).await?;
    if info.reindex_active.is_empty() {
        eprintln!("bucket \"{bucket}\": no reindexing required");
        return Ok(());
    }
    loop {
        let r = moray.reindex_objects(bucket, count).await?;
        if r.processed == 0 {
            eprintln!("bucket \"{bucket}\": all objects processed");
            return Ok(());
        }
        let plural = if r.processed == 1 { "" } else { "s" };
        eprintln!(
            "bucket \"{bucket}\": {} object{plural} processed (continuing)",
            r.processed
        );
    }
}

fn trackmod_unsupported() -> Failure {
    Failure("InvalidBucketConfigError: option trackModification is not supported".to_string())
}

/// `-i FIELD[:TYPE]` and `-u FIELD[:TYPE]`, TYPE defaulting to string; `-x VERSION`.
fn config_from_flags(index: &[String], unique: &[String], version: Option<u32>) -> BucketConfig {
    let mut config = BucketConfig::versioned(version.unwrap_or(0));
    for (specs, is_unique) in [(index, false), (unique, true)] {
        for spec in specs {
            let (field, kind) = spec.split_once(':').unwrap_or((spec, "string"));
            config.index.insert(
                field.to_string(),
                IndexDef {
                    kind: kind.to_string(),
                    unique: is_unique,
                },
            );
        }
    }
    config
}

/// `putbucket -s`: `{"index"|"indexes": {...}, "options": {...}, "version": N,
/// "pre": [], "post": []}`. Triggers are JavaScript in Triton and are refused here.
fn config_from_json(text: &str) -> Result<BucketConfig, Failure> {
    let bad = |what: String| Failure(format!("InvalidBucketConfigError: {what}"));
    let json: Value =
        serde_json::from_str(text).map_err(|e| Failure(format!("parsing stdin: {e}")))?;
    let Value::Object(mut json) = json else {
        return Err(bad("the configuration must be a JSON object".into()));
    };
    for trigger in ["pre", "post"] {
        if json
            .get(trigger)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            return Err(bad(format!("{trigger} triggers are not supported")));
        }
    }
    let index = json
        .remove("index")
        .or_else(|| json.remove("indexes"))
        .unwrap_or(Value::Object(Default::default()));
    let index: BTreeMap<String, IndexDef> =
        serde_json::from_value(index).map_err(|e| bad(format!("index: {e}")))?;
    let options = json
        .remove("options")
        .unwrap_or(Value::Object(Default::default()));
    if options.get("trackModification").is_some() {
        return Err(trackmod_unsupported());
    }
    let mut options: BucketOptions =
        serde_json::from_value(options).map_err(|e| bad(format!("options: {e}")))?;
    if let Some(version) = json.get("version") {
        options.version = version
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| bad(format!("version: expected a whole number, got {version}")))?;
    }
    Ok(BucketConfig { index, options })
}

/// The JSON of `-d`; an empty object without it.
fn parse_data(text: Option<&str>) -> Result<Value, Failure> {
    match text {
        Some(text) => {
            serde_json::from_str(text).map_err(|e| Failure(format!("parsing value for -d: {e}")))
        }
        None => Ok(Value::Object(Default::default())),
    }
}

/// A bucket as node-moray's getbucket prints it (field order included).
#[derive(Serialize)]
struct BucketView<'a> {
    name: &'a str,
    index: &'a BTreeMap<String, IndexDef>,
    pre: [&'a str; 0],
    post: [&'a str; 0],
    options: &'a BucketOptions,
    mtime: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    reindex_active: &'a BTreeMap<u32, Vec<String>>,
}

impl<'a> From<&'a Bucket> for BucketView<'a> {
    fn from(b: &'a Bucket) -> Self {
        BucketView {
            name: &b.name,
            index: &b.index,
            pre: [],
            post: [],
            options: &b.options,
            mtime: &b.mtime,
            reindex_active: &b.reindex_active,
        }
    }
}

fn print_json(value: &impl Serialize, compact: bool) -> Outcome {
    let text = if compact {
        serde_json::to_string(value)
    } else {
        serde_json::to_string_pretty(value)
    };
    print_line(&text.map_err(|e| Failure(format!("formatting output: {e}")))?)
}

fn print_pretty(value: &impl Serialize) -> Outcome {
    print_json(value, false)
}

fn print_line(text: &str) -> Outcome {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_build_node_moray_config() {
        let c = config_from_flags(
            &["age:number".into(), "name".into()],
            &["login".into()],
            Some(3),
        );
        assert_eq!(c.options.version, 3);
        assert_eq!(c.index["age"], IndexDef::new("number"));
        assert_eq!(c.index["name"], IndexDef::new("string"));
        assert_eq!(c.index["login"], IndexDef::unique("string"));
    }

    #[test]
    fn stdin_config_accepts_index_or_indexes_and_version() {
        let c = config_from_json(
            r#"{"indexes": {"a": {"type": "number", "unique": true}}, "version": 4, "pre": []}"#,
        )
        .unwrap();
        assert_eq!(c.options.version, 4);
        assert_eq!(c.index["a"], IndexDef::unique("number"));
        let c =
            config_from_json(r#"{"index": {"b": {"type": "string"}}, "options": {"version": 2}}"#)
                .unwrap();
        assert_eq!(c.options.version, 2);
        assert_eq!(c.index["b"], IndexDef::new("string"));
    }

    #[test]
    fn stdin_config_refuses_triggers_and_trackmodification() {
        let e = config_from_json(r#"{"pre": ["function (r, cb) { cb(); }"]}"#).unwrap_err();
        assert!(e.0.contains("pre triggers"), "{}", e.0);
        let e = config_from_json(r#"{"options": {"trackModification": true}}"#).unwrap_err();
        assert!(e.0.starts_with("InvalidBucketConfigError"), "{}", e.0);
    }
}
