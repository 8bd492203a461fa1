"""The error measure every test and benchmark uses: ||approx - reference|| / ||reference|| in fp64."""


def relative_error(approx, reference):
    return ((approx.double() - reference.double()).norm() / reference.double().norm()).item()
