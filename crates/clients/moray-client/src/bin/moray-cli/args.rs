//! The command line, with node-moray's command names and flags (its `man1` pages).
//! As there, `-h` is the host, so help is `--help` only.

use clap::{ArgAction, Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "moray-cli",
    about = "Operator tools for Moray, with node-moray's commands and flags",
    disable_help_flag = true,
    disable_help_subcommand = true,
    after_help = "The server is -h/-p, else MORAY_URL (tcp://HOST[:PORT]), else 127.0.0.1:2020; \
                  one of -h/-p alone takes the other from MORAY_URL.\n\
                  Each command also runs under its own name (e.g. a `putbucket` symlink)."
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

/// node-moray's COMMON_OPTIONS.
#[derive(Debug, Args)]
pub struct Common {
    /// Host name or IP of the Moray server
    #[arg(short = 'h', long = "host", global = true, value_name = "HOST_OR_IP")]
    pub host: Option<String>,
    /// TCP port of the Moray server
    #[arg(short = 'p', long = "port", global = true, value_name = "PORT")]
    pub port: Option<u16>,
    /// Log to stderr (level from RUST_LOG, default info)
    #[arg(short = 'v', long = "verbose", global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Print help
    #[arg(long = "help", global = true, action = ArgAction::Help)]
    pub help: Option<bool>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update a bucket
    Putbucket {
        /// Index the top-level field FIELD (TYPE defaults to string)
        #[arg(short = 'i', value_name = "FIELD[:TYPE]")]
        index: Vec<String>,
        /// Like -i, and values of FIELD must be unique in the bucket
        #[arg(short = 'u', value_name = "FIELD[:TYPE]")]
        unique: Vec<String>,
        /// Only create, or update a bucket older than VERSION; store VERSION
        #[arg(short = 'x', value_name = "VERSION")]
        version: Option<u32>,
        /// Read the configuration as JSON from stdin; ignore -i, -u, -x
        #[arg(short = 's')]
        stdin: bool,
        /// Enable trackModification (not supported by this Moray: fails)
        #[arg(short = 't')]
        track_modification: bool,
        bucket: String,
    },
    /// Print one bucket's configuration
    Getbucket { bucket: String },
    /// Print every bucket's configuration
    Listbuckets,
    /// Delete a bucket and all of its objects
    Delbucket { bucket: String },
    /// Create or update an object
    Putobject {
        /// The object, as JSON (default {})
        #[arg(short = 'd', value_name = "DATA")]
        data: Option<String>,
        /// Only if the stored object has this etag ("null": only if there is none)
        #[arg(short = 'e', value_name = "ETAG")]
        etag: Option<String>,
        bucket: String,
        key: String,
    },
    /// Print an object by key
    Getobject {
        /// Minimal JSON on one line
        #[arg(short = 'H')]
        compact: bool,
        /// Accepted for backwards compatibility only
        #[arg(short = 's')]
        no_cache: bool,
        bucket: String,
        key: String,
    },
    /// Delete an object by key
    Delobject { bucket: String, key: String },
    /// Print the objects matching a filter
    Findobjects {
        /// Sort ascending by FIELD
        #[arg(short = 'a', value_name = "FIELD", conflicts_with = "desc")]
        asc: Option<String>,
        /// Sort descending by FIELD
        #[arg(short = 'd', value_name = "FIELD")]
        desc: Option<String>,
        /// Minimal JSON, one object per line
        #[arg(short = 'H')]
        compact: bool,
        /// Require every field of FILTER to have a usable index
        #[arg(short = 'i')]
        require_indexes: bool,
        /// At most LIMIT objects (default 1000)
        #[arg(short = 'l', value_name = "LIMIT")]
        limit: Option<u64>,
        /// Do not report _count
        #[arg(short = 'n')]
        no_count: bool,
        /// Skip the first OFFSET objects
        #[arg(short = 'o', value_name = "OFFSET")]
        offset: Option<u64>,
        /// Print the SQL instead of running it
        #[arg(short = 's')]
        sql_only: bool,
        bucket: String,
        filter: String,
    },
    /// Delete the objects matching a filter
    Delmany {
        /// At most LIMIT objects (default 1000)
        #[arg(short = 'l', value_name = "LIMIT")]
        limit: Option<u64>,
        /// Skip the first OFFSET objects
        #[arg(short = 'o', value_name = "OFFSET")]
        offset: Option<u64>,
        bucket: String,
        filter: String,
    },
    /// Set indexed fields on the objects matching a filter
    Updatemany {
        /// The fields to set, as a JSON object
        #[arg(short = 'd', value_name = "DATA")]
        data: Option<String>,
        /// At most LIMIT objects (default 1000)
        #[arg(short = 'l', value_name = "LIMIT")]
        limit: Option<u64>,
        bucket: String,
        filter: String,
    },
    /// Populate newly added indexes, COUNT objects per request (default 100)
    Reindexobjects {
        bucket: String,
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        count: Option<u32>,
    },
    /// Run one SQL statement on Moray's database and print the rows
    Sql { sql: String },
    /// Check that Moray is online
    #[command(alias = "morayping")]
    Ping {
        /// Also check Moray's connection to PostgreSQL
        #[arg(short = 'd')]
        deep: bool,
        /// Wait until Moray can be reached, then ping
        #[arg(short = 'F')]
        wait: bool,
    },
    /// Print the Moray protocol version
    #[command(alias = "morayversion")]
    Version,
    /// Electric-moray's shard list (Moray answers "Operation not supported")
    Gettokens,
    /// Follow a bucket's change feed, one JSON line per change
    Watch {
        /// Start after this sequence number (default: the oldest change kept)
        #[arg(short = 's', value_name = "SEQ", default_value_t = 0)]
        since: u64,
        bucket: String,
    },
}
