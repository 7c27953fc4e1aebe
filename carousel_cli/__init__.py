"""`carousel`: the command-line client of Carousel's REST APIs."""
