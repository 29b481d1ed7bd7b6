//! The kernel side: the `nftables` crate's JSON, handed to libnftables, and listing what a
//! table holds. Behind a trait so the proxier's tests can use a fake that records
//! transactions.
//!
//! Two ways to hand it over, the same JSON and the same library either way:
//!
//! - [`NftLibrary`], the default: Debian's `libnftables.so.1` (the library the `nft` binary is
//!   built on, package libnftables1) loaded into this process with `dlopen`, its contexts
//!   kept for the process's life. Measured on a table of 1,000 Services × 10 endpoints
//!   (11,000 chains) with nft 1.0.6 (`examples/nft_cost.rs`), a partial sync is ~20 ms of
//!   libnftables reading every chain of the namespace into its cache before it evaluates
//!   anything (`add rule`/`add element`/`delete` need the chain cache, and 1.0.6 does not
//!   filter that dump by table), ~10 ms of the kernel validating the table's jump graph at
//!   commit, and little else. Most partial syncs need no chain in that cache, only one set
//!   or none: [`Transaction::with_narrow_cache`] then makes libnftables read just that
//!   (half a flip's CPU on each node). A `nft` child adds a process (fork, exec, dynamic
//!   linking, two pipes) and always starts with an empty cache: p50 56 ms against 21 ms
//!   in-process, in one run on the busy 2-core machine. In-process, the cache also outlives
//!   a run, and is reused while the ruleset's generation is unchanged: after a sync that
//!   needed the whole cache, [`NftLibrary::warm_cache`] refills it, so the next such sync
//!   skips the dump. nft's error text comes back in the context's buffer, and a full sync's
//!   10 MB of JSON is not copied through a pipe.
//! - [`NftCommand`]: `nft -j -f -`, used when the library cannot be loaded.
//!
//! What the table holds (chain and set names, for a full sync and the periodic check) is
//! read over nfnetlink directly ([`kernel::nftables::Nftables::table_names`]), either way: with 11,000
//! chains, `nft -j -t list chains; list sets` cost ~40 ms of CPU (libnftables reading its
//! cache, printing JSON, our parse of it), the netlink dumps a few ms.

use crate::names::TABLE;
use crate::transaction::{Existing, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`nft` could not be run (install it with `apt-get install nftables`)")]
    Missing(#[source] std::io::Error),
    #[error("nft rejected the transaction: {stderr}")]
    Rejected { stderr: String },
    #[error("listing the chains and sets of table ip {TABLE} over netlink")]
    List(#[source] std::io::Error),
    #[error("libnftables: {0}")]
    Library(String),
}

/// The library if it loads, else the `nft` binary.
/// `node_ips` are in the table's `nodeport-ips` set; the library's cache warm-up uses them.
pub fn kernel(node_ips: &[std::net::Ipv4Addr]) -> std::sync::Arc<dyn Nft> {
    match NftLibrary::load() {
        Ok(library) => std::sync::Arc::new(library.with_warm_up(node_ips)),
        Err(e) => {
            tracing::warn!("{e:#}; running the `nft` binary for each sync instead");
            std::sync::Arc::new(NftCommand::default())
        }
    }
}

pub trait Nft: Send + Sync {
    /// Apply one transaction: all of it or nothing.
    fn apply(&self, transaction: &Transaction) -> Result<(), Error>;
    /// The per-service chains and sets the table holds now (empty if there is no table).
    fn existing(&self) -> Result<Existing, Error>;
    /// Called after a sync, off the path of the next one: do now what the next transaction
    /// would otherwise do first (see [`NftLibrary::warm_cache`]).
    fn warm_cache(&self) -> Result<(), Error> {
        Ok(())
    }
    /// [`Nft::existing`] for a full sync, called beside its rendering: also does now what the
    /// full sync's transaction would otherwise do first (see
    /// [`NftLibrary::list_for_full_sync`]).
    fn list_for_full_sync(&self) -> Result<Existing, Error> {
        self.existing()
    }
    /// The ruleset generation of this network namespace, which every committed transaction
    /// (ours or anyone's) moves on: None if it cannot be read, and then nothing is assumed.
    fn generation(&self) -> Option<u32> {
        None
    }
}

/// What both real implementations read over nfnetlink: the table's names and the ruleset
/// generation. The socket is kept (closing one right after a commit waits for nf_tables'
/// deferred clean-up, see [`kernel::nftables`]), and opened again in the calling thread's
/// network namespace if that is another one.
#[derive(Default)]
struct KernelReader {
    handle: std::sync::Mutex<Option<(u64, kernel::nftables::Nftables)>>,
}

impl KernelReader {
    fn with<T>(
        &self,
        read: impl FnOnce(&mut kernel::nftables::Nftables) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let netns = ffi::current_netns();
        let mut handle = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        let nftables = match handle.as_mut() {
            Some((opened_in, nftables)) if *opened_in == netns => nftables,
            _ => {
                &mut handle
                    .insert((netns, kernel::nftables::Nftables::open()?))
                    .1
            }
        };
        let result = read(nftables);
        if result.is_err() {
            // A socket left mid-answer is not reused.
            *handle = None;
        }
        result
    }

    fn listing(&self) -> Result<Existing, Error> {
        let names = self
            .with(|nftables| nftables.table_names(libc::NFPROTO_IPV4 as u8, TABLE))
            .map_err(Error::List)?;
        Ok(Existing {
            chains: names.chains.into_iter().collect(),
            sets: names.sets.into_iter().collect(),
        })
    }

    fn generation(&self) -> Option<u32> {
        self.with(|nftables| nftables.generation())
            .map_err(|e| tracing::debug!("reading the nftables generation: {e}"))
            .ok()
    }
}

/// The real `nft`, in this process's network namespace.
#[derive(Default)]
pub struct NftCommand {
    reader: KernelReader,
}

impl Nft for NftCommand {
    fn apply(&self, transaction: &Transaction) -> Result<(), Error> {
        // The crate's `apply_ruleset` lets nft's error message go to our stderr; the error
        // should carry it, so the same `nft -j -f -` is run here with stderr captured.
        use std::io::Write;
        let json = transaction
            .with_narrow_cache()
            .as_ref()
            .unwrap_or(transaction)
            .to_json();
        let mut child = std::process::Command::new("nft")
            .args(["-j", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(Error::Missing)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(json.as_bytes()).map_err(Error::Missing)?;
        }
        let output = child.wait_with_output().map_err(Error::Missing)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::Rejected {
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }

    fn generation(&self) -> Option<u32> {
        self.reader.generation()
    }

    fn existing(&self) -> Result<Existing, Error> {
        self.reader.listing()
    }
}

/// libnftables in this process (see the module comment for why).
pub struct NftLibrary {
    library: &'static ffi::Library,
    /// One context, made in the network namespace of the thread that first used it, and made
    /// again if a later caller is in another one (its netlink socket is bound to it).
    context: std::sync::Mutex<Option<ffi::Context>>,
    reader: KernelReader,
    /// See [`NftLibrary::warm_cache`]; None: no warm-up.
    warm_up: Option<String>,
    /// Whether the last transaction needed libnftables' whole cache (it was not narrowed, see
    /// [`Transaction::with_narrow_cache`]): only then is the cache warmed after it.
    whole_cache_used: std::sync::atomic::AtomicBool,
}

impl NftLibrary {
    pub fn load() -> Result<NftLibrary, Error> {
        without_fastbins();
        Ok(NftLibrary {
            library: ffi::Library::get()?,
            context: std::sync::Mutex::new(None),
            reader: KernelReader::default(),
            warm_up: None,
            whole_cache_used: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Enable [`NftLibrary::warm_cache`]; `node_ips` are already in `nodeport-ips`.
    pub fn with_warm_up(mut self, node_ips: &[std::net::Ipv4Addr]) -> NftLibrary {
        let mut commands = format!("add table ip {TABLE} {{ }}\n");
        if let Some(ip) = node_ips.first() {
            commands += &format!(
                "add element ip {TABLE} {} {{ {ip} }}\n",
                crate::names::NODEPORT_IPS_SET
            );
        }
        self.warm_up = Some(commands);
        self
    }

    /// Run `commands` (JSON) in one transaction; what nft printed, or its error text.
    fn run(&self, commands: impl Into<Vec<u8>>) -> Result<String, Error> {
        let netns = ffi::current_netns();
        let mut context = self.context.lock().unwrap_or_else(|p| p.into_inner());
        if context.as_ref().is_none_or(|c| c.netns != netns) {
            *context = Some(ffi::Context::new(self.library, netns)?);
        }
        let result = match context.as_mut() {
            Some(context) => context.run(commands),
            None => Err(Error::Library("no context".into())),
        };
        if result.is_err() {
            // libnftables drops its cache when a run fails; a new context makes sure no
            // object of a refused transaction stays in a cache the next run would trust.
            *context = None;
        }
        result
    }

    /// Fill libnftables' cache now, so that the next transaction need not. Before anything
    /// else, each run reads every chain, set and object of the namespace into the context's
    /// cache (~20 ms with 11,000 chains) unless the cache is complete for the run's commands
    /// and the ruleset's generation has not changed since it was read. Our own commit changes
    /// the generation, so right after a sync this run reads the cache again, while nothing
    /// waits: `add table` with a body and `add element` of an address the set holds ask for
    /// the table, chain, set, object and flowtable caches (all a sync's commands need) and
    /// change nothing, so the kernel commits no generation. The next sync then goes straight
    /// to evaluation unless someone else changed the ruleset meanwhile (the generation tells).
    ///
    /// These two commands are nft's native syntax, constant but for the node's address:
    /// libnftables 1.0.6 parses a JSON `add table` without a body, which asks for no cache.
    /// Nothing in the table is changed by them; every change still goes as JSON.
    ///
    /// Skipped after a transaction that was narrowed to a small cache: syncs like it (an
    /// endpoint added or removed) read no chains, and a warm-up would cost each node as much
    /// CPU as it saves when a sync that needs the chains comes next.
    pub fn warm_cache(&self) -> Result<(), Error> {
        if !self
            .whole_cache_used
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(());
        }
        match &self.warm_up {
            Some(commands) => self.run(commands.as_str()).map(drop),
            None => Ok(()),
        }
    }

    /// The table's names, then libnftables' cache filled for the full sync's transaction
    /// (see [`NftLibrary::warm_cache`]), on the thread that lists while the Services are
    /// rendered on another: that transaction then goes straight to evaluation. Measured on a
    /// restart with 1,000 Services × 10 endpoints: the warm-up costs ~18 ms there and saves
    /// ~35 ms in the transaction. Without a table there is nothing to read (and the warm-up's
    /// `add element` would fail); if it fails anyway, the transaction reads the cache itself.
    pub fn list_for_full_sync(&self) -> Result<Existing, Error> {
        let existing = self.existing()?;
        if let (false, Some(commands)) = (existing.chains.is_empty(), &self.warm_up) {
            if let Err(e) = self.run(commands.as_str()) {
                tracing::debug!("warming nft's cache for the full sync: {e}");
            }
        }
        Ok(existing)
    }
}

impl Nft for NftLibrary {
    fn apply(&self, transaction: &Transaction) -> Result<(), Error> {
        let narrowed = transaction.with_narrow_cache();
        self.whole_cache_used
            .store(narrowed.is_none(), std::sync::atomic::Ordering::Relaxed);
        // Handed over as it is: a full sync's 9 MB of JSON is not copied again.
        self.run(narrowed.as_ref().unwrap_or(transaction).to_json())
            .map(drop)
    }

    fn existing(&self) -> Result<Existing, Error> {
        self.reader.listing()
    }

    fn warm_cache(&self) -> Result<(), Error> {
        NftLibrary::warm_cache(self)
    }

    fn list_for_full_sync(&self) -> Result<Existing, Error> {
        NftLibrary::list_for_full_sync(self)
    }

    fn generation(&self) -> Option<u32> {
        self.reader.generation()
    }
}

/// Turn glibc's fastbins off for this process (its per-thread caches stay). A large run
/// makes libnftables allocate and free tens of thousands of small objects, which fastbins
/// hold until a larger allocation consolidates them, again and again: on a full sync of
/// 1,000 Services × 10 endpoints that was ~10 % of the run's CPU. Measured on that table,
/// alternating, under load: 0.97 → 0.85 s of CPU for the run in a small process, 1.08 →
/// 1.02 s for the whole full sync in ours. Partial syncs are too small to tell.
fn without_fastbins() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; 0 is documented for M_MXFAST.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
    }
}

/// The few libnftables calls used, resolved with `dlopen`/`dlsym` so that a machine without
/// the library still runs (with the `nft` binary) and builds need no `-dev` package.
mod ffi {
    use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

    use super::Error;

    const LIBRARY: &CStr = c"libnftables.so.1";
    /// `NFT_CTX_OUTPUT_JSON` of `<nftables/libnftables.h>`: JSON output, and JSON input first.
    const OUTPUT_JSON: c_uint = 1 << 4;

    type New = unsafe extern "C" fn(c_uint) -> *mut c_void;
    type Free = unsafe extern "C" fn(*mut c_void);
    type SetFlags = unsafe extern "C" fn(*mut c_void, c_uint);
    type Buffer = unsafe extern "C" fn(*mut c_void) -> c_int;
    type GetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
    type Run = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

    pub struct Library {
        new: New,
        free: Free,
        set_output_flags: SetFlags,
        buffer_output: Buffer,
        buffer_error: Buffer,
        output: GetBuffer,
        error: GetBuffer,
        run: Run,
    }

    static LOADED: std::sync::OnceLock<Result<Library, String>> = std::sync::OnceLock::new();

    impl Library {
        pub fn get() -> Result<&'static Library, Error> {
            LOADED
                .get_or_init(Library::open)
                .as_ref()
                .map_err(|e| Error::Library(e.clone()))
        }

        fn open() -> Result<Library, String> {
            // SAFETY: dlopen/dlsym with NUL-terminated names; the handle is never closed, so
            // the function pointers stay valid for the process's life. Each symbol is cast to
            // the signature libnftables.h declares for it.
            unsafe {
                let handle = libc::dlopen(LIBRARY.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
                if handle.is_null() {
                    return Err(format!(
                        "loading {} (apt-get install libnftables1): {}",
                        LIBRARY.to_string_lossy(),
                        dl_error()
                    ));
                }
                let symbol = |name: &CStr| -> Result<*mut c_void, String> {
                    let address = libc::dlsym(handle, name.as_ptr());
                    if address.is_null() {
                        Err(format!(
                            "{} has no {}",
                            LIBRARY.to_string_lossy(),
                            name.to_string_lossy()
                        ))
                    } else {
                        Ok(address)
                    }
                };
                Ok(Library {
                    new: std::mem::transmute::<*mut c_void, New>(symbol(c"nft_ctx_new")?),
                    free: std::mem::transmute::<*mut c_void, Free>(symbol(c"nft_ctx_free")?),
                    set_output_flags: std::mem::transmute::<*mut c_void, SetFlags>(symbol(
                        c"nft_ctx_output_set_flags",
                    )?),
                    buffer_output: std::mem::transmute::<*mut c_void, Buffer>(symbol(
                        c"nft_ctx_buffer_output",
                    )?),
                    buffer_error: std::mem::transmute::<*mut c_void, Buffer>(symbol(
                        c"nft_ctx_buffer_error",
                    )?),
                    output: std::mem::transmute::<*mut c_void, GetBuffer>(symbol(
                        c"nft_ctx_get_output_buffer",
                    )?),
                    error: std::mem::transmute::<*mut c_void, GetBuffer>(symbol(
                        c"nft_ctx_get_error_buffer",
                    )?),
                    run: std::mem::transmute::<*mut c_void, Run>(symbol(
                        c"nft_run_cmd_from_buffer",
                    )?),
                })
            }
        }
    }

    fn dl_error() -> String {
        // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next call.
        unsafe {
            let message = libc::dlerror();
            if message.is_null() {
                String::from("unknown error")
            } else {
                CStr::from_ptr(message).to_string_lossy().into_owned()
            }
        }
    }

    /// The inode of the calling thread's network namespace.
    pub fn current_netns() -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino())
    }

    /// One `struct nft_ctx`, its output and errors captured in buffers.
    pub struct Context {
        library: &'static Library,
        context: *mut c_void,
        pub netns: u64,
    }

    // SAFETY: the context is used by one thread at a time (it sits behind a Mutex);
    // libnftables keeps no thread-local state for it.
    unsafe impl Send for Context {}

    impl Context {
        pub fn new(library: &'static Library, netns: u64) -> Result<Context, Error> {
            // SAFETY: calls as libnftables.h documents them, on the context just made.
            unsafe {
                let context = (library.new)(0);
                if context.is_null() {
                    return Err(Error::Library("nft_ctx_new failed".into()));
                }
                let context = Context {
                    library,
                    context,
                    netns,
                };
                (library.set_output_flags)(context.context, OUTPUT_JSON);
                if (library.buffer_output)(context.context) != 0
                    || (library.buffer_error)(context.context) != 0
                {
                    return Err(Error::Library("nft_ctx_buffer_output failed".into()));
                }
                Ok(context)
            }
        }

        /// Run `commands`; nft's output, or its error text. Both buffers are read (which
        /// empties them) after every run.
        pub fn run(&mut self, commands: impl Into<Vec<u8>>) -> Result<String, Error> {
            let commands = CString::new(commands)
                .map_err(|_| Error::Library("a NUL byte in the commands".into()))?;
            // SAFETY: the context is valid until drop; the returned buffers are
            // NUL-terminated and valid until the next call on the context, so they are
            // copied at once.
            unsafe {
                let status = (self.library.run)(self.context, commands.as_ptr());
                let output = text((self.library.output)(self.context));
                let error = text((self.library.error)(self.context));
                if status == 0 {
                    Ok(output)
                } else {
                    Err(Error::Rejected {
                        stderr: error.trim().to_string(),
                    })
                }
            }
        }
    }

    unsafe fn text(buffer: *const c_char) -> String {
        if buffer.is_null() {
            String::new()
        } else {
            // SAFETY: (the caller's) a NUL-terminated buffer from libnftables.
            unsafe { CStr::from_ptr(buffer) }
                .to_string_lossy()
                .into_owned()
        }
    }

    impl Drop for Context {
        fn drop(&mut self) {
            // SAFETY: made by nft_ctx_new, freed once.
            unsafe { (self.library.free)(self.context) }
        }
    }
}
