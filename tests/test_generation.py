"generation: batched greedy decoding equals one prompt at a time."

from instruct_course.generation import generate
from instruct_course.models import load_model, load_tokenizer


def test_generate_batched_equals_unbatched_greedy():
    tok, m = load_tokenizer("tiny"), load_model("tiny", device="cpu")
    prompts = ["Tom is 12 years old.", 'In French, "the black cat eats the fish" is', "def f(x):"]
    batched = generate(m, tok, prompts, max_new_tokens=8, batch_size=3)
    single = [generate(m, tok, [p], max_new_tokens=8)[0] for p in prompts]
    assert [b["text"] for b in batched] == [s["text"] for s in single]
    assert all(o["finish_reason"] in ("stop", "length") for o in batched)
