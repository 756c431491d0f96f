"""What summary notebooks show: tables and figures over result files (runs, studies, sampling, the
embedding benchmark, a training history). Imports plotting libraries; the library never imports this."""
