//! The one pyo3 binding file: thin wrappers over the core, errors mapped once to Python exceptions.

use pyo3::prelude::*;

#[pymodule]
fn _core(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
