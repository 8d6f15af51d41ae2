//! stub: written in its own change
