"""Every prompt the alignment tasks use, in one place: several paraphrases per task.

Placeholders: ``{history}`` (items joined by ", "), ``{item}`` (item text), ``{code}`` (an item's code
string), ``{query}``, ``{candidate}``, ``{candidates}``, ``{scenario}`` (a target scenario name). Index 0 of ``seqrec`` is what inference uses by
default, so change it only together with a retrained model.
"""

from __future__ import annotations

# The system message sent with every chat-formatted prompt. Passing our own stops templates such as
# SmolLM2's from injecting their default persona, and keeps train and inference prompts identical.
SYSTEM_PROMPT = "You are a recommender system. Items are written as code tokens."

PLAIN_FORMAT = "{system}\n\n### Instruction:\n{instruction}\n\n### Response:\n"

HISTORY_SEPARATOR = ", "
SCENARIO_TAG = "{item} ({scenario})"  # a history item tagged with its interaction's scenario

# Put in front of a seqrec instruction when user knowledge is on (TaskConfig.user_knowledge_dir).
USER_KNOWLEDGE_TEMPLATE = "About this user: {knowledge}\n"

TEMPLATES: dict[str, list[str]] = {
    "seqrec": [
        "The user has interacted with these items in order: {history}. Predict the next item.",
        "Here is a user's interaction history, oldest first: {history}. Which item will the user choose next?",
        "Given the purchase sequence {history}, recommend the next item for this user.",
        "A user bought {history}, in this order. What do they buy next?",
    ],
    # scenario_prompts: the seqrec task naming the target scenario, history items tagged by scenario
    "seqrec_scenario": [
        "The user has interacted with these items in order: {history}. Predict the next item in {scenario}.",
        "Here is a user's interaction history, oldest first: {history}. Which item in {scenario} will the user "
        "choose next?",
        "Given the purchase sequence {history}, recommend the next {scenario} item for this user.",
        "A user bought {history}, in this order. What do they buy next in {scenario}?",
    ],
    "item2code": [
        "Which item code corresponds to this item? {item}",
        "Give the code of the following item. {item}",
        "Item description: {item}. What is its code?",
    ],
    "code2item": [
        "What is the title of item {code}?",
        "Name the item whose code is {code}.",
        "Item {code} is called what?",
    ],
    "fusion_title2code": [
        "The user has bought these items in order: {history}. Predict the code of the next item.",
        "Purchase history by title, oldest first: {history}. Give the code of the item the user buys next.",
        "Given the items {history}, which item code comes next?",
    ],
    "fusion_code2title": [
        "The user has interacted with these items in order: {history}. What is the title of the next item?",
        "Here is a user's history as item codes: {history}. Name the item the user chooses next.",
        "Given the sequence {history}, give the title of the next item.",
    ],
    "query2item": [
        "A user is searching for: {query}. Recommend an item.",
        "Find an item that matches this request: {query}.",
        "Which item fits the need \"{query}\"?",
    ],
    "binary": [
        "The user has interacted with these items in order: {history}. Will the user choose {candidate} next? "
        "Answer yes or no.",
        "History: {history}. Candidate item: {candidate}. Is the candidate the user's next item? Answer yes or no.",
        "Given the sequence {history}, would the user buy {candidate} next? Answer yes or no.",
    ],
    "choice": [
        "The user has interacted with these items in order: {history}. Choose the next item from these "
        "candidates: {candidates}.",
        "History: {history}. Candidates: {candidates}. Which candidate will the user pick next?",
        "Given the sequence {history}, pick the user's next item among {candidates}.",
    ],
}

# Attribute-based queries for query2item; a variant is used only when all its fields are non-empty.
QUERY_TEMPLATES: list[tuple[tuple[str, ...], str]] = [
    (("category",), "I need something in {category}"),
    (("category", "brand"), "{category} from {brand}"),
    (("keywords",), "something with {keywords}"),
    (("category", "keywords"), "{category} with {keywords}"),
    (("path",), "an item in the category {path}"),
]

# Prompt for optional LLM-generated queries (sft_tasks/query_gen.py; generation + cache: alignrec.llm.generation).
QUERY_GENERATION_PROMPT = (
    "Write one short search query (at most 12 words) that a shopper looking for this product would type. "
    "Do not mention the product name.\nProduct: {item}"
)

# Evaluation requests in words (sft_tasks/requests.py): another prompt than QUERY_GENERATION_PROMPT, so no request
# is a query2item training query; asked about valid / test targets only.
REQUEST_GENERATION_PROMPT = (
    "A customer tells a shop assistant in one sentence what they need, without naming the product. Write that "
    "sentence (at most 20 words) for a customer who ends up buying this product.\nProduct: {item}"
)
# Request + history evaluation: the seqrec history sentence, then the query2item request (TEMPLATES index 0 of each).
REQUEST_HISTORY_TEMPLATE = "The user has interacted with these items in order: {history}. {request}"

YES, NO = "yes", "no"
