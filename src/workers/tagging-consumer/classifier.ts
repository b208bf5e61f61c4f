/**
 * @module
 * The classification core (src/classify) as the tagging consumer needs it ({@link TagClassifier}):
 * the active model first (for the content-hash dedupe, no model call), then one image classified
 * pinned to that same model version, with each label's class id.
 */
import type { Classifier, ModelView } from "../../classify/index.ts";
import { identityOf } from "../../classify/model-state.ts";
import type { TagClassifier } from "../../tagging/consumer.ts";

const indexCache = new WeakMap<ModelView, Map<string, number>>();

/** Label -> first class id with that name (ImageNet-22k repeats a few names). */
function labelIndex(view: ModelView): Map<string, number> {
  let m = indexCache.get(view);
  if (!m) {
    m = new Map();
    view.labels.forEach((l, i) => {
      if (!m?.has(l)) m?.set(l, i);
    });
    indexCache.set(view, m);
  }
  return m;
}

/** Adapts a core {@link Classifier} (one per queue batch) to the tagging consumer. */
export function tagClassifier(classifier: Classifier): TagClassifier {
  let view: ModelView | undefined;
  return {
    async activeModel() {
      view = await classifier.model();
      return identityOf(view);
    },
    async classify(bytes, topK) {
      const v = view ?? (await classifier.model());
      const out = await classifier.classify([bytes], { topK: Math.min(topK, v.labels.length), model: v });
      const index = labelIndex(v);
      return {
        labels: (out.predictions[0] ?? []).map((p) => ({
          label: p.label,
          score: p.score,
          index: index.get(p.label) ?? -1,
        })),
        image: out.images[0],
        model: out.model,
      };
    },
  };
}
