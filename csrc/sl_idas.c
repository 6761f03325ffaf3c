/* IDAS layer: filled in by the DAE work. */
