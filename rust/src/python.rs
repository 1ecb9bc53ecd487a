//! The one pyo3 binding file: thin wrappers over the core, errors mapped once to Python exceptions.
//!
//! Every entry point runs inside `guarded`, so even a bug surfaces as a ValueError rather than a
//! PanicException; the real error paths all return `Error` values, mapped by `to_py_err`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyOSError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::count::ChunkCounter;
use crate::error::Error;
use crate::ordered::{run_ordered, split_units};
use crate::pretokenize::Pattern;
use crate::recover::recover_merges as core_recover_merges;
use crate::tokenizer::Tokenizer;
use crate::train::{train_merges, TrainOptions};

fn to_py_err(error: Error) -> PyErr {
    match error {
        Error::Io { path, source } => {
            // OSError(errno, strerror, filename) picks the subclass (FileNotFoundError, ...) itself.
            let errno = source.raw_os_error().unwrap_or(0);
            PyOSError::new_err((errno, source.to_string(), path.display().to_string()))
        }
        other => PyValueError::new_err(other.to_string()),
    }
}

fn guarded<T>(work: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(result) => result,
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(PyValueError::new_err(format!(
                "internal error in bpe_fast (please report it): {detail}"
            )))
        }
    }
}

/// Extracts an argument, turning TypeError/OverflowError into a ValueError that names it.
fn extract_arg<'py, T: FromPyObject<'py>>(value: &Bound<'py, PyAny>, name: &str) -> PyResult<T> {
    value
        .extract()
        .map_err(|e| PyValueError::new_err(format!("{name}: {e}")))
}

/// (id, bytes) pairs. Each token is taken as a bytes object: extracting a Vec<u8> directly walks
/// it one int per byte through the iterator protocol (60 ms for the 1 MB of tokens that training
/// on a long run of one character makes).
fn extract_tokens(tokens: &Bound<'_, PyAny>) -> PyResult<Vec<(u32, Vec<u8>)>> {
    let tokens: Vec<(u32, Bound<'_, PyBytes>)> = extract_arg(tokens, "tokens")?;
    Ok(tokens
        .into_iter()
        .map(|(id, bytes)| (id, bytes.as_bytes().to_vec()))
        .collect())
}

/// One token id: an int (or an object with `__index__`, like a numpy integer). A negative or too
/// large int is a ValueError naming it and its position, as is anything else.
fn id_of(item: &Bound<'_, PyAny>, position: usize) -> PyResult<u32> {
    let unknown =
        || PyValueError::new_err(format!("unknown token id {item} at position {position}"));
    match item.extract::<u64>() {
        Ok(id) => u32::try_from(id).map_err(|_| unknown()),
        Err(err) if err.is_instance_of::<PyOverflowError>(item.py()) => Err(unknown()),
        Err(_) => Err(PyValueError::new_err(format!(
            "token id at position {position} is {}, not an int",
            item.repr()?
        ))),
    }
}

/// Token ids from a list, a tuple or any other iterable of ints (see `id_of`).
fn extract_ids(ids: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    if let Ok(list) = ids.downcast::<PyList>() {
        return list_ids(list);
    }
    if let Ok(tuple) = ids.downcast::<PyTuple>() {
        return indexed_ids(tuple.as_any(), tuple.len(), ffi::PyTuple_GetItem);
    }
    if ids.is_instance_of::<PyString>() {
        return Err(PyValueError::new_err("token ids must be ints, not a str"));
    }
    let mut out = Vec::new();
    for (position, item) in ids.try_iter()?.enumerate() {
        out.push(id_of(&item?, position)?);
    }
    Ok(out)
}

/// Token ids from a list: read straight from its item array while every item is a plain int id
/// (no C call to fetch an item), else the general path from the first item that is not.
fn list_ids(list: &Bound<'_, PyList>) -> PyResult<Vec<u32>> {
    let py = list.py();
    let len = list.len();
    let Some(offset) = list_items_offset(py) else {
        return indexed_ids(list.as_any(), len, ffi::PyList_GetItem);
    };
    let mut out = Vec::with_capacity(len);
    // SAFETY: the GIL is held and nothing in this loop runs Python code (PyLong_AsUnsignedLongLong
    // does not call `__index__`), so the list can neither change nor be freed while its item
    // array is read; `len` items are there.
    unsafe {
        let items = *((list.as_ptr() as *const u8).add(offset) as *const *const *mut ffi::PyObject);
        for position in 0..len {
            let value = ffi::PyLong_AsUnsignedLongLong(*items.add(position));
            match u32::try_from(value) {
                Ok(id) => out.push(id),
                Err(_) => {
                    drop(PyErr::take(py));
                    break;
                }
            }
        }
    }
    if out.len() < len {
        // Not a plain int id at `out.len()`: the general path names it (or converts it).
        let done = out.len();
        let rest = indexed_ids(list.as_any(), len, ffi::PyList_GetItem)?;
        out.extend_from_slice(&rest[done..]);
    }
    Ok(out)
}

/// Token ids from a list or tuple (`get_item` is PyList_GetItem or PyTuple_GetItem), at one C
/// call for the item and one for its value: the safe per-item path (a new reference, a type
/// check and the conversion, each a call under the stable ABI) was most of a decode call.
fn indexed_ids(
    sequence: &Bound<'_, PyAny>,
    len: usize,
    get_item: unsafe extern "C" fn(*mut ffi::PyObject, ffi::Py_ssize_t) -> *mut ffi::PyObject,
) -> PyResult<Vec<u32>> {
    let py = sequence.py();
    let mut out = Vec::with_capacity(len);
    for position in 0..len {
        // SAFETY: the GIL is held and `sequence` is a live list/tuple matching `get_item`, which
        // returns a borrowed reference or NULL with IndexError set (a list can shrink while the
        // slow path below runs Python code). PyLong_AsUnsignedLongLong runs no Python code (it
        // does not call `__index__`: a non-int only sets TypeError), so nothing can drop the item
        // while it is borrowed; the slow path takes its own reference before anything else.
        let id = unsafe {
            let item = get_item(sequence.as_ptr(), position as ffi::Py_ssize_t);
            if item.is_null() {
                return Err(PyErr::fetch(py));
            }
            let value = ffi::PyLong_AsUnsignedLongLong(item);
            match u32::try_from(value) {
                Ok(id) => id,
                Err(_) => {
                    // Not an int (maybe a numpy integer), negative, or too large: clear the
                    // error, if any, and redo it the general way, which names the bad item.
                    drop(PyErr::take(py));
                    id_of(&Bound::from_borrowed_ptr(py, item), position)?
                }
            }
        };
        out.push(id);
    }
    Ok(out)
}

/// The strs of `texts` (any iterable but a str); a non-str item is a TypeError naming its index.
fn str_items<'py>(texts: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyString>>> {
    if texts.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "texts must be a sequence of str, not a str",
        ));
    }
    let mut out = Vec::with_capacity(texts.len().unwrap_or(0));
    for (index, text) in texts.try_iter()?.enumerate() {
        let text = text?;
        match text.downcast_into::<PyString>() {
            Ok(text) => out.push(text),
            Err(err) => {
                return Err(PyTypeError::new_err(format!(
                    "texts[{index}] must be a str, got {}",
                    err.into_inner().get_type().name()?
                )))
            }
        }
    }
    Ok(out)
}

extern "C" {
    // In the limited API from Python 3.10; exported by every CPython 3, so an abi3 build for 3.9
    // can call it too. It returns the str's own UTF-8 (cached inside the object), so no copy.
    fn PyUnicode_AsUTF8AndSize(
        unicode: *mut ffi::PyObject,
        size: *mut ffi::Py_ssize_t,
    ) -> *const std::os::raw::c_char;
}

/// The UTF-8 of a Python str without copying it (strict: a lone surrogate is a
/// UnicodeEncodeError). The slice lives as long as the str object, which the caller holds.
/// Rejected: extracting a `String`, which copies every text once more (and, under the 3.9 stable
/// ABI, twice: through a bytes object first).
fn utf8<'a>(text: &'a Bound<'_, PyString>) -> PyResult<&'a str> {
    let mut size: ffi::Py_ssize_t = 0;
    // SAFETY: `text` is a live str; the returned buffer belongs to it and is immutable for its
    // lifetime, which outlives 'a because `text` is borrowed for 'a.
    unsafe {
        let data = PyUnicode_AsUTF8AndSize(text.as_ptr(), &mut size);
        if data.is_null() {
            return Err(PyErr::fetch(text.py()));
        }
        let bytes = std::slice::from_raw_parts(data as *const u8, size as usize);
        // CPython's UTF-8 of a str is valid UTF-8 (surrogates were refused above).
        Ok(std::str::from_utf8_unchecked(bytes))
    }
}

/// A str argument, or a TypeError naming it.
fn str_arg<'a, 'py>(
    value: &'a Bound<'py, PyAny>,
    name: &str,
) -> PyResult<&'a Bound<'py, PyString>> {
    value.downcast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name} must be a str, got {}",
            value
                .get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ))
    })
}

/// Where a list's item array pointer sits in the list object, when this interpreter lays
/// `PyListObject` out as CPython does (the variable-size object header, then `PyObject **ob_item`):
/// checked once against a real list, None when it does not hold (then lists are filled through
/// `PyList_SetItem`, a call per item). Filling the array directly is what C extensions built
/// against the full API do with `PyList_SET_ITEM`; the stable ABI only hides the layout.
fn list_items_offset(py: Python<'_>) -> Option<usize> {
    static OFFSET: pyo3::sync::GILOnceCell<Option<usize>> = pyo3::sync::GILOnceCell::new();
    *OFFSET.get_or_init(py, || {
        let offset = 3 * std::mem::size_of::<usize>();
        // SAFETY: plain C-API calls on objects made here; the read at `offset` stays inside the
        // list object (at least the variable-size header plus the item pointer on any CPython).
        unsafe {
            let first = ffi::PyLong_FromLong(1_234_567);
            let second = ffi::PyLong_FromLong(7_654_321);
            let list = ffi::PyList_New(2);
            if first.is_null() || second.is_null() || list.is_null() {
                ffi::PyErr_Clear();
                return None;
            }
            ffi::PyList_SetItem(list, 0, first);
            ffi::PyList_SetItem(list, 1, second);
            let items = *((list as *const u8).add(offset) as *const *const *mut ffi::PyObject);
            let laid_out = !items.is_null() && *items == first && *items.add(1) == second;
            ffi::Py_DecRef(list);
            laid_out.then_some(offset)
        }
    })
}

/// `ids` as little-endian bytes in a new bytes object, written in place (one copy).
fn ids_bytes<'py>(py: Python<'py>, ids: &[u32]) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, ids.len() * 4, |out| {
        for (dest, id) in out.chunks_exact_mut(4).zip(ids) {
            dest.copy_from_slice(&id.to_le_bytes());
        }
        Ok(())
    })
}

fn int(py: Python<'_>, id: u32) -> Bound<'_, PyAny> {
    let Ok(value) = id.into_pyobject(py);
    value.into_any()
}

#[pyclass(name = "ChunkCounter", module = "bpe_fast._core")]
struct PyChunkCounter {
    inner: ChunkCounter,
}

#[pymethods]
impl PyChunkCounter {
    #[new]
    #[pyo3(signature = (pattern, num_threads = 0))]
    fn new(pattern: String, num_threads: usize) -> PyResult<Self> {
        guarded(|| {
            let pattern = Pattern::parse(&pattern).map_err(to_py_err)?;
            Ok(PyChunkCounter {
                inner: ChunkCounter::new(pattern, num_threads),
            })
        })
    }

    fn add_texts(&mut self, py: Python<'_>, texts: Vec<String>) -> PyResult<()> {
        guarded(|| {
            py.allow_threads(|| self.inner.add_texts(&texts))
                .map_err(to_py_err)
        })
    }

    #[pyo3(signature = (path, doc_sep = None))]
    fn add_file(&mut self, py: Python<'_>, path: PathBuf, doc_sep: Option<String>) -> PyResult<()> {
        guarded(|| {
            py.allow_threads(|| self.inner.add_file(&path, doc_sep.as_deref()))
                .map_err(to_py_err)
        })
    }

    fn num_chunks(&self) -> usize {
        self.inner.num_chunks()
    }

    fn total_bytes(&self) -> u64 {
        self.inner.total_bytes()
    }

    #[pyo3(signature = (num_merges, min_frequency = 1, max_token_length = None, progress = None))]
    fn train(
        &self,
        py: Python<'_>,
        num_merges: usize,
        min_frequency: u64,
        max_token_length: Option<usize>,
        progress: Option<PyObject>,
    ) -> PyResult<Vec<(u32, u32)>> {
        guarded(|| {
            if max_token_length == Some(0) {
                return Err(PyValueError::new_err("max_token_length must be at least 1"));
            }
            let options = TrainOptions {
                num_merges,
                min_frequency,
                max_token_length,
                num_threads: self.inner.num_threads(),
            };
            let mut callback_error: Option<PyErr> = None;
            let result = py.allow_threads(|| {
                // Every few hundred merges: let Ctrl-C (and other signals) through, then report.
                let mut report = |done: usize| -> crate::Result<()> {
                    Python::with_gil(|py| {
                        let outcome = match &progress {
                            Some(callback) => py
                                .check_signals()
                                .and_then(|_| callback.call1(py, (done,)).map(drop)),
                            None => py.check_signals(),
                        };
                        outcome.map_err(|e| {
                            callback_error = Some(e);
                            Error::Interrupted
                        })
                    })
                };
                let chunks = self
                    .inner
                    .counts()
                    .iter()
                    .map(|(bytes, n)| (bytes.as_slice(), *n));
                train_merges(chunks, &options, &mut report)
            });
            match (result, callback_error) {
                (_, Some(error)) => Err(error),
                (result, None) => result.map_err(to_py_err),
            }
        })
    }
}

/// Python ints for ids below this are made once per tokenizer and shared by all the lists it
/// returns (see `PyTokenizer::id_list`); larger ids (a sparse vocab) get fresh ints.
const SHARED_INTS_MAX: usize = 1 << 18;

#[pyclass(name = "CoreTokenizer", module = "bpe_fast._core", frozen)]
struct PyTokenizer {
    inner: Arc<Tokenizer>,
    /// id -> its Python int, made on first use.
    ints: Mutex<Vec<Option<Py<PyAny>>>>,
}

impl PyTokenizer {
    /// `ids` as a Python list. Making a Python int per token was about 40% of a one-document
    /// encode call (allocating and freeing ~1M ints for 4 MB of English); Python ints are
    /// immutable, so a list holds the tokenizer's shared int for each id instead, written straight
    /// into the list's item array where the layout allows (`list_items_offset`).
    /// Rejected: raising the shared ints' reference counts by writing their first word (as C
    /// extensions built for the 3.9 limited API do) instead of a `Py_IncRef` call per id. On 1 MB
    /// of English (GPT-2, best of 30) a list cost 1.45-1.57 ms over the ids alone against 1.54-2.06
    /// ms with the calls: within noise, not worth the layout assumption.
    fn id_list<'py>(&self, py: Python<'py>, ids: &[u32]) -> PyResult<Bound<'py, PyList>> {
        // The lock is only taken with the GIL held, so `try_lock` fails only on re-entrance (a
        // garbage-collector callback encoding with this tokenizer while a list is being built)
        // or after a panic: then the list gets fresh ints.
        let Ok(mut ints) = self.ints.try_lock() else {
            return PyList::new(py, ids.iter().map(|&id| int(py, id)));
        };
        if ints.is_empty() {
            let size = self.inner.vocab_size().min(SHARED_INTS_MAX);
            ints.resize_with(size, || None);
        }
        // An owned reference to the int for `id`.
        let mut int_for = |id: u32| -> PyResult<*mut ffi::PyObject> {
            match ints.get_mut(id as usize) {
                Some(slot) => {
                    let shared = slot.get_or_insert_with(|| int(py, id).unbind()).as_ptr();
                    // SAFETY: `shared` is a live int the tokenizer owns; the GIL is held.
                    unsafe { ffi::Py_INCREF(shared) };
                    Ok(shared)
                }
                None => Ok(int(py, id).into_ptr()),
            }
        };
        // SAFETY: a new list of `ids.len()` NULL slots, each set exactly once to an owned
        // reference before the list is returned (a list being dropped tolerates NULL slots, so an
        // error midway leaks nothing).
        unsafe {
            let list = ffi::PyList_New(ids.len() as ffi::Py_ssize_t);
            if list.is_null() {
                return Err(PyErr::fetch(py));
            }
            let list = Bound::from_owned_ptr(py, list);
            match list_items_offset(py) {
                Some(offset) => {
                    let items = *((list.as_ptr() as *const u8).add(offset)
                        as *const *mut *mut ffi::PyObject);
                    for (i, &id) in ids.iter().enumerate() {
                        *items.add(i) = int_for(id)?;
                    }
                }
                None => {
                    for (i, &id) in ids.iter().enumerate() {
                        ffi::PyList_SetItem(list.as_ptr(), i as ffi::Py_ssize_t, int_for(id)?);
                    }
                }
            }
            Ok(list.downcast_into_unchecked())
        }
    }

    /// The bytes of `ids`, written straight into the new bytes object (GIL released).
    fn decode_ids<'py>(&self, py: Python<'py>, ids: Vec<u32>) -> PyResult<Bound<'py, PyBytes>> {
        let inner = &self.inner;
        let len = inner.decoded_len(&ids).map_err(to_py_err)?;
        PyBytes::new_with(py, len, |out| {
            py.allow_threads(|| inner.decode_into(&ids, out))
                .map_err(to_py_err)
        })
    }

    fn matcher(
        &self,
        allowed: &[String],
    ) -> PyResult<Option<Arc<crate::tokenizer::SpecialMatcher>>> {
        self.inner.special_matcher(allowed).map_err(to_py_err)
    }
}

#[pymethods]
impl PyTokenizer {
    #[new]
    fn new(
        py: Python<'_>,
        tokens: &Bound<'_, PyAny>,
        merges: &Bound<'_, PyAny>,
        special_tokens: &Bound<'_, PyAny>,
        pattern: String,
    ) -> PyResult<Self> {
        guarded(|| {
            let tokens = extract_tokens(tokens)?;
            let merges: Vec<(u32, u32)> = extract_arg(merges, "merges")?;
            let specials: Vec<(String, u32)> = extract_arg(special_tokens, "special_tokens")?;
            let pattern = Pattern::parse(&pattern).map_err(to_py_err)?;
            let inner = py
                .allow_threads(|| Tokenizer::new(tokens, merges, specials, pattern))
                .map_err(to_py_err)?;
            Ok(PyTokenizer {
                inner: Arc::new(inner),
                ints: Mutex::new(Vec::new()),
            })
        })
    }

    /// A tiktoken rank file, read, its merges recovered and validated in Rust (see
    /// `Tokenizer::from_ranks`).
    #[staticmethod]
    fn from_tiktoken_file(
        py: Python<'_>,
        path: PathBuf,
        special_tokens: &Bound<'_, PyAny>,
        pattern: String,
    ) -> PyResult<Self> {
        guarded(|| {
            let specials: Vec<(String, u32)> = extract_arg(special_tokens, "special_tokens")?;
            let pattern = Pattern::parse(&pattern).map_err(to_py_err)?;
            let inner = py
                .allow_threads(|| {
                    let tokens = crate::tiktoken_file::read_tiktoken_ranks(&path)?;
                    Tokenizer::from_ranks(tokens, specials, pattern).map_err(|e| match e {
                        Error::InvalidData { what, location } => Error::InvalidData {
                            what,
                            location: format!("{}: {location}", path.display()),
                        },
                        other => other,
                    })
                })
                .map_err(to_py_err)?;
            Ok(PyTokenizer {
                inner: Arc::new(inner),
                ints: Mutex::new(Vec::new()),
            })
        })
    }

    #[getter]
    fn pattern(&self) -> String {
        self.inner.pattern().name().to_string()
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    fn merges(&self) -> Vec<(u32, u32)> {
        self.inner.merges().to_vec()
    }

    fn tokens<'py>(&self, py: Python<'py>) -> Vec<(u32, Bound<'py, PyBytes>)> {
        self.inner
            .tokens()
            .iter()
            .map(|(id, bytes)| (*id, PyBytes::new(py, bytes)))
            .collect()
    }

    fn special_tokens(&self) -> Vec<(String, u32)> {
        self.inner.specials().to_vec()
    }

    fn token_bytes<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        guarded(|| {
            let bytes = self.inner.token_bytes(id_of(id, 0)?).map_err(to_py_err)?;
            Ok(PyBytes::new(py, bytes))
        })
    }

    #[pyo3(signature = (text, num_threads = 0))]
    fn encode_ordinary<'py>(
        &self,
        py: Python<'py>,
        text: &Bound<'py, PyAny>,
        num_threads: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        guarded(|| {
            let text = utf8(str_arg(text, "text")?)?;
            let ids = py
                .allow_threads(|| self.inner.encode_parallel(text, None, num_threads))
                .map_err(to_py_err)?;
            self.id_list(py, &ids)
        })
    }

    #[pyo3(signature = (text, allowed_special, num_threads = 0))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        text: &Bound<'py, PyAny>,
        allowed_special: Vec<String>,
        num_threads: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        guarded(|| {
            let text = utf8(str_arg(text, "text")?)?;
            let matcher = self.matcher(&allowed_special)?;
            let ids = py
                .allow_threads(|| {
                    self.inner
                        .encode_parallel(text, matcher.as_deref(), num_threads)
                })
                .map_err(to_py_err)?;
            self.id_list(py, &ids)
        })
    }

    /// This thread makes each run of documents' UTF-8 (the pool starts encoding the first runs
    /// meanwhile, GIL released), then turns the runs already encoded into Python lists, in order,
    /// and encodes runs itself when none is ready.
    #[pyo3(signature = (texts, allowed_special, num_threads = 0))]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        allowed_special: Vec<String>,
        num_threads: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        guarded(|| {
            let matcher = self.matcher(&allowed_special)?;
            let matcher = matcher.as_deref();
            let texts = str_items(texts)?;
            // Units by length in characters (O(1) per str): their UTF-8 is made in `prepare`.
            let lengths = texts
                .iter()
                .map(|t| t.len())
                .collect::<PyResult<Vec<_>>>()?;
            let units = split_units(&lengths, num_threads);
            // Each unit's texts' UTF-8 (borrowed from the strs, which `texts` keeps alive), from
            // `prepare` until `encode_unit` takes them.
            let inputs: Vec<Mutex<Option<Vec<&str>>>> =
                units.iter().map(|_| Mutex::new(None)).collect();
            let input = |unit: usize| inputs[unit].lock().unwrap_or_else(|e| e.into_inner());
            let prepare = |unit: usize| -> PyResult<()> {
                // Strict UTF-8: a lone surrogate raises UnicodeEncodeError here.
                let strings = texts[units[unit].clone()]
                    .iter()
                    .map(utf8)
                    .collect::<PyResult<Vec<&str>>>()?;
                *input(unit) = Some(strings);
                Ok(())
            };
            let inner = &*self.inner;
            let encode_unit = |unit: usize| -> crate::Result<Vec<Vec<u32>>> {
                let strings = input(unit).take().unwrap_or_default();
                strings.iter().map(|t| inner.encode(t, matcher)).collect()
            };
            let mut lists = Vec::with_capacity(texts.len());
            run_ordered(
                units.len(),
                num_threads,
                prepare,
                encode_unit,
                |unit, encoded| {
                    let encoded = encoded.map_err(to_py_err)?;
                    if encoded.len() != units[unit].len() {
                        return Err(PyValueError::new_err(
                            "internal error: a unit was not prepared",
                        ));
                    }
                    for ids in encoded {
                        lists.push(self.id_list(py, &ids)?);
                    }
                    Ok(())
                },
                |work| py.allow_threads(work),
            )
            .map_err(to_py_err)??;
            PyList::new(py, lists)
        })
    }

    #[pyo3(signature = (text, allowed_special, num_threads = 0))]
    fn encode_to_buffer<'py>(
        &self,
        py: Python<'py>,
        text: &Bound<'py, PyAny>,
        allowed_special: Vec<String>,
        num_threads: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        guarded(|| {
            let text = utf8(str_arg(text, "text")?)?;
            let matcher = self.matcher(&allowed_special)?;
            let ids = py
                .allow_threads(|| {
                    self.inner
                        .encode_parallel(text, matcher.as_deref(), num_threads)
                })
                .map_err(to_py_err)?;
            ids_bytes(py, &ids)
        })
    }

    #[pyo3(signature = (texts, allowed_special, num_threads = 0, prefix_id = None))]
    fn encode_batch_to_buffer<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        allowed_special: Vec<String>,
        num_threads: usize,
        prefix_id: Option<u32>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        guarded(|| {
            let matcher = self.matcher(&allowed_special)?;
            let texts = str_items(texts)?;
            let strings = texts.iter().map(utf8).collect::<PyResult<Vec<&str>>>()?;
            let (ids, ends) = py
                .allow_threads(|| {
                    self.inner.encode_batch_flat(
                        &strings,
                        matcher.as_deref(),
                        num_threads,
                        prefix_id,
                    )
                })
                .map_err(to_py_err)?;
            let ends = PyBytes::new_with(py, ends.len() * 8, |out| {
                for (dest, end) in out.chunks_exact_mut(8).zip(&ends) {
                    dest.copy_from_slice(&end.to_le_bytes());
                }
                Ok(())
            })?;
            Ok((ids_bytes(py, &ids)?, ends))
        })
    }

    fn decode_bytes<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        guarded(|| {
            let ids = extract_ids(ids)?;
            self.decode_ids(py, ids)
        })
    }

    fn decode_buffer<'py>(&self, py: Python<'py>, ids: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        guarded(|| {
            if ids.len() % 4 != 0 {
                return Err(PyValueError::new_err(format!(
                    "buffer length {} is not a multiple of 4 (little-endian uint32 ids)",
                    ids.len()
                )));
            }
            let ids: Vec<u32> = ids
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            self.decode_ids(py, ids)
        })
    }
}

#[pyfunction]
fn recover_merges(py: Python<'_>, tokens: &Bound<'_, PyAny>) -> PyResult<Vec<(u32, u32)>> {
    guarded(|| {
        let tokens = extract_tokens(tokens)?;
        py.allow_threads(|| core_recover_merges(&tokens))
            .map_err(to_py_err)
    })
}

#[pyfunction]
fn split(py: Python<'_>, pattern: String, text: String) -> PyResult<Vec<String>> {
    guarded(|| {
        let pattern = Pattern::parse(&pattern).map_err(to_py_err)?;
        py.allow_threads(|| pattern.split(&text)).map_err(to_py_err)
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyChunkCounter>()?;
    m.add_class::<PyTokenizer>()?;
    m.add_function(wrap_pyfunction!(recover_merges, m)?)?;
    m.add_function(wrap_pyfunction!(split, m)?)?;
    Ok(())
}
