# lit configuration for Attune: one file per pass or feature.
import os
import lit.formats

config.name = "Attune"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.attune_obj_root, "test", "lit")
config.excludes = ["Inputs", "lit.cfg.py", "lit.site.cfg.py.in"]

tools = os.path.join(config.attune_obj_root, "tools")
config.substitutions.append(("%attn-opt", os.path.join(tools, "attn-opt", "attn-opt")))
config.substitutions.append(("%attnc", os.path.join(tools, "attnc", "attnc")))
config.substitutions.append(("%specs", os.path.join(config.attune_src_root, "specs")))
config.substitutions.append(("%python", "/usr/bin/python3"))
for tool in ["FileCheck", "not", "count", "split-file"]:
    config.substitutions.append((r"\b%s\b" % tool, os.path.join(config.llvm_tools_dir, tool)))
if os.path.exists("/usr/local/cuda/bin/ptxas"):
    config.available_features.add("ptxas")
    config.substitutions.append(("%ptxas", "/usr/local/cuda/bin/ptxas"))
