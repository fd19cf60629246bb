//! manatee-adm: administer a Manatee shard (see `manatee-adm --help` and docs/manatee.md).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = manatee::adm::Cli::parse();
    match manatee::adm::run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("manatee-adm: {}", manatee_client::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
