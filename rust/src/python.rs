//! The one pyo3 binding file: thin wrappers over the core, errors mapped once to Python exceptions.
//!
//! Every entry point runs inside `guarded`, so even a bug surfaces as a ValueError rather than a
//! PanicException; the real error paths all return `Error` values, mapped by `to_py_err`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::count::ChunkCounter;
use crate::error::Error;
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

/// Token ids from any sequence of ints; a bad element is a ValueError naming it and its position.
fn extract_ids(ids: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    if let Ok(fast) = ids.extract::<Vec<u64>>() {
        return Ok(fast);
    }
    let mut out = Vec::new();
    for (position, item) in ids.try_iter()?.enumerate() {
        let item = item?;
        match item.extract::<u64>() {
            Ok(id) => out.push(id),
            Err(_) => {
                return Err(PyValueError::new_err(format!(
                    "unknown token id {item} at position {position}"
                )));
            }
        }
    }
    Ok(out)
}

fn le_bytes(ids: &[u32]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_le_bytes()).collect()
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

#[pyclass(name = "CoreTokenizer", module = "bpe_fast._core", frozen)]
struct PyTokenizer {
    inner: Arc<Tokenizer>,
}

impl PyTokenizer {
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
            let tokens: Vec<(u32, Vec<u8>)> = extract_arg(tokens, "tokens")?;
            let merges: Vec<(u32, u32)> = extract_arg(merges, "merges")?;
            let specials: Vec<(String, u32)> = extract_arg(special_tokens, "special_tokens")?;
            let pattern = Pattern::parse(&pattern).map_err(to_py_err)?;
            let inner = py
                .allow_threads(|| Tokenizer::new(tokens, merges, specials, pattern))
                .map_err(to_py_err)?;
            Ok(PyTokenizer {
                inner: Arc::new(inner),
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
            let ids = extract_ids(&pyo3::types::PyTuple::new(py, [id])?.into_any())?;
            let bytes = self.inner.decode_bytes(ids).map_err(to_py_err)?;
            Ok(PyBytes::new(py, &bytes))
        })
    }

    fn encode_ordinary(&self, py: Python<'_>, text: String) -> PyResult<Vec<u32>> {
        guarded(|| {
            py.allow_threads(|| self.inner.encode_ordinary(&text))
                .map_err(to_py_err)
        })
    }

    fn encode(
        &self,
        py: Python<'_>,
        text: String,
        allowed_special: Vec<String>,
    ) -> PyResult<Vec<u32>> {
        guarded(|| {
            let matcher = self.matcher(&allowed_special)?;
            py.allow_threads(|| self.inner.encode(&text, matcher.as_deref()))
                .map_err(to_py_err)
        })
    }

    #[pyo3(signature = (texts, allowed_special, num_threads = 0))]
    fn encode_batch(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        allowed_special: Vec<String>,
        num_threads: usize,
    ) -> PyResult<Vec<Vec<u32>>> {
        guarded(|| {
            let matcher = self.matcher(&allowed_special)?;
            py.allow_threads(|| {
                self.inner
                    .encode_batch(&texts, matcher.as_deref(), num_threads)
            })
            .map_err(to_py_err)
        })
    }

    fn encode_to_buffer<'py>(
        &self,
        py: Python<'py>,
        text: String,
        allowed_special: Vec<String>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        guarded(|| {
            let matcher = self.matcher(&allowed_special)?;
            let bytes = py
                .allow_threads(|| {
                    self.inner
                        .encode(&text, matcher.as_deref())
                        .map(|ids| le_bytes(&ids))
                })
                .map_err(to_py_err)?;
            Ok(PyBytes::new(py, &bytes))
        })
    }

    #[pyo3(signature = (texts, allowed_special, num_threads = 0, prefix_id = None))]
    fn encode_batch_to_buffer<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        allowed_special: Vec<String>,
        num_threads: usize,
        prefix_id: Option<u32>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        guarded(|| {
            let matcher = self.matcher(&allowed_special)?;
            let (ids, ends) = py
                .allow_threads(|| {
                    let (ids, ends) = self.inner.encode_batch_flat(
                        &texts,
                        matcher.as_deref(),
                        num_threads,
                        prefix_id,
                    )?;
                    let ends: Vec<u8> = ends.iter().flat_map(|e| e.to_le_bytes()).collect();
                    Ok::<_, Error>((le_bytes(&ids), ends))
                })
                .map_err(to_py_err)?;
            Ok((PyBytes::new(py, &ids), PyBytes::new(py, &ends)))
        })
    }

    fn decode_bytes<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        guarded(|| {
            let ids = extract_ids(ids)?;
            let bytes = py
                .allow_threads(|| self.inner.decode_bytes(ids))
                .map_err(to_py_err)?;
            Ok(PyBytes::new(py, &bytes))
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
            let ids: Vec<u64> = ids
                .chunks_exact(4)
                .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect();
            let bytes = py
                .allow_threads(|| self.inner.decode_bytes(ids))
                .map_err(to_py_err)?;
            Ok(PyBytes::new(py, &bytes))
        })
    }
}

#[pyfunction]
fn recover_merges(py: Python<'_>, tokens: &Bound<'_, PyAny>) -> PyResult<Vec<(u32, u32)>> {
    guarded(|| {
        let tokens: Vec<(u32, Vec<u8>)> = extract_arg(tokens, "tokens")?;
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
