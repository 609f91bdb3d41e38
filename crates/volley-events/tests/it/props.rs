//! Property tests: scheduling never returns a start before it was asked for, and
//! occurrences are sorted and never on blackout dates or outside the hours.
