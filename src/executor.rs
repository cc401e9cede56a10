//! The executor: the only place that knows the stage order; walks the plan, asks the
//! cache, and drives pull, sandbox, layer and image writing.
