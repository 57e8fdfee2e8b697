from mulcot_batch.prompts import extract_label, format_chain, parse_chain, task_instruction

TEACHER_CHAIN = (
    '"Text_analysis": "The text praises the team."\n\n'
    '"Image_analysis": "The image shows fans cheering."\n\n'
    '"Conflict_resolution": "There are no conflicts between the text and image analyses."\n\n'
    '"Final_conclusion": "Overall the sentiment toward the team is positive, not negative."\n\n'
    '"Prediction": positive'
)


def test_label_is_read_after_the_last_prediction_marker():
    assert extract_label(TEACHER_CHAIN) == "positive"
    assert extract_label('Prediction: "Negative".') == "negative"
    assert extract_label('"Prediction": neutral ... later "Prediction": \'POSITIVE\'') == "positive"
    assert extract_label("no marker, just positive words") is None
    assert extract_label('"Prediction": unsure') is None
    assert extract_label(None) is None


def test_teacher_chain_parses_into_five_fields():
    chain = parse_chain(TEACHER_CHAIN)
    assert chain.text_analysis == "The text praises the team."
    assert chain.image_analysis == "The image shows fans cheering."
    assert chain.conflict_resolution.startswith("There are no conflicts")
    assert chain.final_conclusion.endswith("not negative.")
    assert chain.label == "positive"


def test_partial_chain_leaves_missing_fields_null():
    chain = parse_chain('"Text_analysis": "only this much was generated before the token lim')
    assert chain.text_analysis.startswith("only this much")
    assert chain.image_analysis is None and chain.label is None


def test_format_chain_round_trips_through_parse():
    fields = {"text_analysis": "a", "image_analysis": "b", "conflict_resolution": "c", "final_conclusion": "d"}
    chain = parse_chain(format_chain(fields, "neutral"))
    assert (chain.text_analysis, chain.final_conclusion, chain.label) == ("a", "d", "neutral")


def test_aspect_switches_msc_to_masc_wording():
    assert "'Obama'" in task_instruction("Obama", reasoning=True)
    assert "aspect" not in task_instruction(None, reasoning=True)
    assert "Prediction" in task_instruction(None, reasoning=True)
    assert "Prediction" not in task_instruction(None, reasoning=False)
