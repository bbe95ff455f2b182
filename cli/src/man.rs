//! `shmnet man`: one page, shmnet(1), generated from the command line's
//! definition (`cli`): every visible subcommand with its options, so that
//! the page refers to no other page of ours (none is installed).

use clap::{Arg, Command};

/// Text as roff reads it: backslashes and hyphens escaped, a line never
/// starting with a control character.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split('\n') {
        if !out.is_empty() {
            out.push('\n');
        }
        if line.starts_with('.') || line.starts_with('\'') {
            out.push_str("\\&");
        }
        for c in line.chars() {
            match c {
                '\\' => out.push_str("\\e"),
                '-' => out.push_str("\\-"),
                c => out.push(c),
            }
        }
    }
    out
}

/// `-s, --long VALUE` in bold and italics.
fn option_head(a: &Arg) -> String {
    let value = a
        .get_value_names()
        .and_then(|v| v.first())
        .filter(|_| a.get_action().takes_values())
        .map(|v| format!(" \\fI{}\\fR", esc(v)))
        .unwrap_or_default();
    if a.is_positional() {
        let name = a
            .get_value_names()
            .and_then(|v| v.first())
            .map_or_else(|| a.get_id().to_string(), |v| v.to_string());
        return format!("\\fI{}\\fR", esc(&name));
    }
    let mut names = Vec::new();
    if let Some(s) = a.get_short() {
        names.push(format!("\\fB\\-{s}\\fR"));
    }
    if let Some(l) = a.get_long() {
        names.push(format!("\\fB\\-\\-{}\\fR", esc(l)));
    }
    format!("{}{value}", names.join(", "))
}

fn help(a: &Arg) -> String {
    let mut text = a
        .get_long_help()
        .or(a.get_help())
        .map(ToString::to_string)
        .unwrap_or_default();
    let values: Vec<String> = a
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| match v.get_help() {
            Some(h) => format!("{}: {h}", v.get_name()),
            None => v.get_name().to_owned(),
        })
        .collect();
    if !values.is_empty() && a.get_action().takes_values() {
        text.push_str(&format!(" ({})", values.join("; ")));
    }
    esc(&text)
}

fn visible_args(c: &Command) -> impl Iterator<Item = &Arg> {
    c.get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_id() != "help")
}

fn synopsis(name: &str, c: &Command) -> String {
    let mut out = format!("\\fB{}\\fR", esc(name));
    if visible_args(c).any(|a| !a.is_positional()) {
        out.push_str(" [\\fIOPTIONS\\fR]");
    }
    for a in visible_args(c).filter(|a| a.is_positional()) {
        let dots = if a.get_num_args().is_some_and(|n| n.max_values() > 1) {
            "..."
        } else {
            ""
        };
        out.push_str(&format!(" {}{dots}", option_head(a)));
    }
    out
}

pub(crate) fn render(cmd: &Command) -> String {
    let mut cmd = cmd.clone();
    cmd.build();
    let version = cmd.get_version().unwrap_or_default().to_owned();
    let mut p = String::new();
    p.push_str(&format!(".TH SHMNET 1 \"\" \"shmnet {}\"\n", esc(&version)));
    p.push_str(".SH NAME\n");
    p.push_str(&format!(
        "shmnet \\- {}\n",
        esc(&cmd.get_about().map(ToString::to_string).unwrap_or_default())
    ));
    p.push_str(".SH SYNOPSIS\n");
    p.push_str("\\fBshmnet\\fR [\\fB\\-V\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGS\\fR]\n");
    p.push_str(".SH DESCRIPTION\n");
    p.push_str(&esc(&cmd
        .get_long_about()
        .or(cmd.get_about())
        .map(ToString::to_string)
        .unwrap_or_default()));
    p.push_str("\n.SH OPTIONS\n");
    for a in visible_args(&cmd) {
        p.push_str(&format!(".TP\n{}\n{}\n", option_head(a), help(a)));
    }
    p.push_str(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("shmnet {}", sub.get_name());
        p.push_str(&format!(".SS \"{}\"\n", esc(&name)));
        if sub.get_name() == "help" {
            // clap's own: its argument is not in the definition.
            p.push_str("\\fBshmnet help\\fR [\\fICOMMAND\\fR]");
        } else {
            p.push_str(&synopsis(&name, sub));
        }
        p.push_str("\n.PP\n");
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(ToString::to_string)
            .unwrap_or_default();
        p.push_str(&esc(&about));
        p.push('\n');
        for a in visible_args(sub) {
            p.push_str(&format!(".TP\n{}\n{}\n", option_head(a), help(a)));
        }
    }
    p.push_str(".SH EXIT STATUS\n");
    p.push_str(&esc(
        "shmnet check: 0 when no check failed, 1 otherwise. shmnet ss: 0, or 1 when the \
         directory cannot be read. shmnet run: the program's (it replaces shmnet), 127 when \
         it is not found, 126 when it cannot be run.",
    ));
    p.push_str("\n.SH FILES\n");
    p.push_str(&esc(
        "SHMNET_DIR/status-<pid>-<start>: the sockets each process publishes (read by shmnet ss); \
         SHMNET_DIR/stats-<uid>: the connection counters (shmnet ss -s). The formats: \
         docs/status.md and docs/counters.md in the source.",
    ));
    p.push('\n');
    p
}
