//! `tally receipt fetch|check`: receipts of voucher issues and redemptions, as text, as a QR
//! code in the terminal and as a PNG, checkable offline by anyone holding the genesis file.

use super::audit::read_bounded;
use crate::client::NodeClient;
use crate::output::emit;
use crate::Outcome;
use anyhow::{anyhow, Context};
use clap::Subcommand;
use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};
use serde_json::json;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use tally_types::{DedupToken, EntryId, HeldTokens, Receipt, ReceiptError, SubjectToken};

/// The largest receipt file read: a text receipt is a few KiB, a PNG of its QR code some tens.
const RECEIPT_FILE_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// The largest PNG side decoded, in pixels.
const PNG_SIDE_MAX: u32 = 8192;
/// Pixels per QR module in the PNG: large enough for a phone camera and a thermal printer.
const PNG_MODULE_PX: u32 = 4;

#[derive(Debug, Subcommand)]
pub enum ReceiptCmd {
    /// Fetch the receipt of a committed voucher issue or redemption and print it as text (and
    /// a QR code with --qr); --out and --png write it to files. The beneficiary's tokens are
    /// withheld from it.
    Fetch {
        /// The entry id of the issue or redemption.
        entry: EntryId,
        /// Write the text receipt here.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Write the QR code as a PNG here.
        #[arg(long)]
        png: Option<PathBuf>,
        /// Also print the QR code in the terminal.
        #[arg(long)]
        qr: bool,
        /// The node's API.
        #[arg(long, env = "TALLY_NODE", default_value = "http://127.0.0.1:7100")]
        node: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a receipt offline against the genesis file you trust: a text receipt (its printed
    /// summary must be the one it proves), or a PNG of its QR code. Exit 0 when it holds, 1
    /// naming the check that failed, 2 when the files cannot be read.
    Check {
        /// The receipt: a text file or a PNG (`-` for text on stdin).
        file: PathBuf,
        /// The genesis file you trust.
        #[arg(long)]
        genesis: PathBuf,
        /// The beneficiary's subject token: an issue's receipt withholds it and checks only
        /// with it.
        #[arg(long)]
        subject: Option<SubjectToken>,
        /// The beneficiary's dedup token, when the issue carried one.
        #[arg(long)]
        dedup: Option<DedupToken>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ReceiptCmd) -> anyhow::Result<Outcome> {
    match cmd {
        ReceiptCmd::Fetch {
            entry,
            out,
            png,
            qr,
            node,
            json,
        } => fetch(&entry, out.as_deref(), png.as_deref(), qr, &node, json),
        ReceiptCmd::Check {
            file,
            genesis,
            subject,
            dedup,
            json,
        } => check(&file, &genesis, HeldTokens { subject, dedup }, json),
    }
}

/// The QR code of a payload line: error correction M (15 % of the code may be lost) when the
/// line fits, otherwise L.
fn qr_code(line: &str) -> anyhow::Result<QrCode> {
    QrCode::with_error_correction_level(line, EcLevel::M)
        .or_else(|_| QrCode::with_error_correction_level(line, EcLevel::L))
        .map_err(|e| {
            anyhow!(
                "the receipt ({} characters) does not fit one QR code: {e}; use the text form",
                line.len()
            )
        })
}

fn fetch(
    entry: &EntryId,
    out: Option<&Path>,
    png: Option<&Path>,
    qr: bool,
    node: &str,
    json: bool,
) -> anyhow::Result<Outcome> {
    let Some(proof) = NodeClient::new(node).proof(entry)? else {
        eprintln!("entry {entry} is in no committed block on node {node} yet (pending, refused or unknown; see `tally entry status`)");
        return Ok(Outcome::Failed);
    };
    let receipt = match Receipt::new(proof) {
        Ok(r) => r,
        Err(e @ ReceiptError::Kind(_)) => {
            eprintln!("{e}");
            return Ok(Outcome::Failed);
        }
        Err(e) => return Err(e.into()),
    };
    let text = receipt.to_text();
    let line = receipt.payload_line();
    if let Some(path) = out {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    let code = if png.is_some() || qr {
        Some(qr_code(&line)?)
    } else {
        None
    };
    if let (Some(path), Some(code)) = (png, &code) {
        code.render::<image::Luma<u8>>()
            .module_dimensions(PNG_MODULE_PX, PNG_MODULE_PX)
            .build()
            .save_with_format(path, image::ImageFormat::Png)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let v = json!({
        "entry": entry,
        "summary": receipt.summary(),
        "payload": line,
        "withheld": receipt.withheld,
        "text_file": out.map(|p| p.display().to_string()),
        "png_file": png.map(|p| p.display().to_string()),
    });
    emit(json, &v, || {
        let mut s = text.trim_end().to_string();
        if let (true, Some(code)) = (qr, &code) {
            // Light modules drawn as blocks: the code reads on a dark terminal background.
            let drawn = code
                .render::<Dense1x2>()
                .dark_color(Dense1x2::Light)
                .light_color(Dense1x2::Dark)
                .build();
            s = format!("{drawn}\n{s}");
        }
        s
    })?;
    Ok(Outcome::Ok)
}

/// The text of a receipt file: the file itself, or the QR code found in a PNG.
fn receipt_text(file: &Path) -> anyhow::Result<Result<String, ReceiptError>> {
    let bytes = read_bounded(file, RECEIPT_FILE_BYTES_MAX + 1)?;
    if bytes.len() as u64 > RECEIPT_FILE_BYTES_MAX {
        return Ok(Err(ReceiptError::Text(format!(
            "the file is larger than {RECEIPT_FILE_BYTES_MAX} bytes"
        ))));
    }
    if !bytes.starts_with(b"\x89PNG") {
        return Ok(String::from_utf8(bytes)
            .map_err(|_| ReceiptError::Text("the file is neither text nor a PNG".into())));
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), image::ImageFormat::Png);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(PNG_SIDE_MAX);
    limits.max_image_height = Some(PNG_SIDE_MAX);
    reader.limits(limits);
    let image = match reader.decode() {
        Ok(i) => i.to_luma8(),
        Err(e) => return Ok(Err(ReceiptError::Text(format!("unreadable PNG: {e}")))),
    };
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let mut last = "no QR code found in the image".to_string();
    for grid in prepared.detect_grids() {
        match grid.decode() {
            Ok((_, content)) => return Ok(Ok(content)),
            Err(e) => last = format!("a QR code that does not decode: {e}"),
        }
    }
    Ok(Err(ReceiptError::Text(last)))
}

fn check(file: &Path, genesis: &Path, tokens: HeldTokens, json: bool) -> anyhow::Result<Outcome> {
    let genesis = tally_node::load_genesis(genesis)?;
    let checked = receipt_text(file)?.and_then(|text| {
        let (receipt, printed) = Receipt::from_text(&text)?;
        let printed = (!printed.is_empty()).then_some(printed);
        receipt
            .verify(&genesis, &tokens, printed.as_deref())
            .map(|c| (receipt, c))
    });
    match checked {
        Ok((receipt, c)) => {
            let p = &c.proven;
            let v = json!({
                "ok": true,
                "chain_id": p.chain_id,
                "genesis_hash": genesis.hash(),
                "entry": p.entry_id,
                "kind": receipt.proof.entry.body.payload.kind(),
                "height": p.height,
                "index": p.index,
                "block_hash": p.block_hash,
                "outcome": p.outcome,
                "signers": p.signers,
                "validators": p.validators,
                "summary": c.summary,
            });
            emit(json, &v, || {
                format!(
                    "OK receipt checked against genesis {}: entry {} is in block {} ({} of {} validators signed)\n  {}",
                    genesis.hash(),
                    p.entry_id,
                    p.height,
                    p.signers,
                    p.validators,
                    c.summary.join("\n  ")
                )
            })?;
            Ok(Outcome::Ok)
        }
        Err(e) => {
            let v = json!({ "ok": false, "check": e.check(), "detail": e.to_string() });
            emit(json, &v, || format!("FAILED check: {}\n  {e}", e.check()))?;
            Ok(Outcome::Failed)
        }
    }
}
