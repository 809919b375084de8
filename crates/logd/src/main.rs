//! berth-logd: one per container, started by containerd's shim from the
//! `binary://` stdio URI berth-agent writes (see the library's docs). It
//! copies the container's stdout and stderr into a rotated log file.

use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match berth_logd::Config::from_args(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("berth-logd: {e}");
            return ExitCode::from(2);
        }
    };
    match berth_logd::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-logd: {e}");
            ExitCode::FAILURE
        }
    }
}
