"""A replayed answer whose state lives at the vendor (a stored response, for `previous_response_id`).

Replay gives back the recorded answer, but not the state the vendor kept for it: once the vendor lost it
(its retention ended; here the scripted server forgets its stored responses), a live call that names it is
refused. The step then stops with one line naming the replayed call that made the state and the way out
(run that step live again), and following it works.
"""

from __future__ import annotations

import pytest

from tests.harness import Kernel, summaries

SETUP = "%load_ext kernel_ext\nfrom openai import OpenAI\nclient = OpenAI()\n"
PLAN = "%%durable plan\nfirst = client.responses.create(model='m', input='Plan a day in Lisbon')\n"
ASK = ("%%durable ask\nsecond = client.responses.create(model='m', input='{question}', "
       "previous_response_id=first.id)\nprint(second.output_text)\n")


@pytest.mark.slow
def test_a_call_naming_state_the_vendor_lost_says_which_step_to_run_again(kernel: Kernel, model_server):
    kernel.ok(SETUP)
    kernel.ok(PLAN)
    kernel.ok(ASK.format(question="And the hotel?"))
    kernel.restart()
    model_server.forget_responses()  # the vendor's retention ended while the kernel was gone

    kernel.ok(SETUP)
    assert summaries(kernel.ok(PLAN))[0]["replayed"] == 1
    assert summaries(kernel.ok(ASK.format(question="And the hotel?")))[0]["replayed"] == 1  # unchanged: replays
    status, outputs = kernel.execute(ASK.format(question="And the museum?"))  # edited: goes live
    assert status == "error"
    (error,) = [o for o in outputs if o["output_type"] == "error"]
    assert error["ename"] == "VendorStateLost" and "\n" not in error["evalue"]
    assert "step 'plan' call 1 replayed" in error["evalue"] and "%%durable plan --rerun" in error["evalue"]
    (line,) = [o["data"]["text/plain"] for o in outputs if "durable" in o.get("metadata", {})]
    assert line.startswith("✗") and "VendorStateLost" in line  # the step failed, and says so

    # The way out: run the step that made the state live again, then the edited step.
    assert summaries(kernel.ok(PLAN.replace("%%durable plan", "%%durable plan --rerun")))[0]["live"] == 1
    answered = kernel.ok(ASK.format(question="And the museum?"))
    assert summaries(answered)[0]["live"] == 1 and "[scripted]" in "".join(o.get("text", "") for o in answered)
