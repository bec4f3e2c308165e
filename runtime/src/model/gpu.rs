//! The catalogue of GPU models containers may ask for by code in `desiredGPUs`
//! (the native container API's GET /v1/gpu-models).

/// A GPU model of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GpuModel {
    /// What `desiredGPUs` names.
    pub code: &'static str,
    /// For people.
    pub name: &'static str,
}

/// Every model, in the document's order.
pub const GPU_MODELS: &[GpuModel] = &[
    GpuModel {
        code: "h100",
        name: "Nvidia h100",
    },
    GpuModel {
        code: "a100",
        name: "Nvidia a100",
    },
    GpuModel {
        code: "a40",
        name: "Nvidia a40",
    },
    GpuModel {
        code: "a16",
        name: "Nvidia a16",
    },
    GpuModel {
        code: "t4",
        name: "Nvidia t4",
    },
    GpuModel {
        code: "v100",
        name: "Nvidia v100",
    },
    GpuModel {
        code: "p4",
        name: "Nvidia tesla-p4",
    },
    GpuModel {
        code: "p100",
        name: "Nvidia tesla-p100",
    },
    GpuModel {
        code: "k80",
        name: "Nvidia tesla-k80",
    },
    GpuModel {
        code: "3050",
        name: "Nvidia rtx-3050",
    },
    GpuModel {
        code: "3060",
        name: "Nvidia rtx-3060",
    },
    GpuModel {
        code: "3060ti",
        name: "Nvidia rtx-3060-ti",
    },
    GpuModel {
        code: "3070",
        name: "Nvidia rtx-3070",
    },
    GpuModel {
        code: "3070ti",
        name: "Nvidia rtx-3070-ti",
    },
    GpuModel {
        code: "3080",
        name: "Nvidia rtx-3080",
    },
    GpuModel {
        code: "3080ti",
        name: "Nvidia rtx-3080-ti",
    },
    GpuModel {
        code: "3090",
        name: "Nvidia rtx-3090",
    },
    GpuModel {
        code: "3090ti",
        name: "Nvidia rtx-3090-ti",
    },
    GpuModel {
        code: "1050",
        name: "Nvidia gtx-1050",
    },
    GpuModel {
        code: "1050ti",
        name: "Nvidia gtx-1050-ti",
    },
    GpuModel {
        code: "1060",
        name: "Nvidia gtx-1060",
    },
    GpuModel {
        code: "1070",
        name: "Nvidia gtx-1070",
    },
    GpuModel {
        code: "1070ti",
        name: "Nvidia gtx-1070-ti",
    },
    GpuModel {
        code: "1080",
        name: "Nvidia gtx-1080",
    },
    GpuModel {
        code: "1080ti",
        name: "Nvidia gtx-1080-ti",
    },
];

impl GpuModel {
    /// The catalogue model `desired` names, by code or by name, in any case
    /// (the native container API shows both: `h100` and `Nvidia a100`).
    pub fn find(desired: &str) -> Option<&'static GpuModel> {
        GPU_MODELS
            .iter()
            .find(|m| m.code.eq_ignore_ascii_case(desired) || m.name.eq_ignore_ascii_case(desired))
    }

    /// The catalogue model of a GPU the driver calls `product` (`NVIDIA H100 80GB
    /// HBM3`, `Tesla T4`, `NVIDIA GeForce RTX 3060 Ti`): the model whose code is one
    /// word of the product name, or two joined (`3060` and `ti`), the longest such.
    pub fn for_product(product: &str) -> Option<&'static GpuModel> {
        let words = product_words(product);
        let pairs = words.windows(2).map(|w| format!("{}{}", w[0], w[1]));
        let candidates: Vec<String> = words.iter().cloned().chain(pairs).collect();
        GPU_MODELS
            .iter()
            .filter(|m| candidates.iter().any(|c| c == m.code))
            .max_by_key(|m| m.code.len())
    }

    /// The model code a GPU called `product` is scheduled under: its catalogue code,
    /// or for a product the catalogue lacks, the product name in lower case with
    /// dashes (`nvidia-l4`), which only requests accepting any model match.
    pub fn code_for_product(product: &str) -> String {
        match Self::for_product(product) {
            Some(model) => model.code.to_string(),
            None => product_words(product).join("-"),
        }
    }
}

/// A product name's words, in lower case: `NVIDIA A100-SXM4-80GB` gives `nvidia`,
/// `a100`, `sxm4`, `80gb`.
fn product_words(product: &str) -> Vec<String> {
    product
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_found_by_code_or_name_and_products_map_to_them() {
        assert_eq!(GpuModel::find("h100").unwrap().code, "h100");
        assert_eq!(GpuModel::find("Nvidia tesla-p4").unwrap().code, "p4");
        assert_eq!(GpuModel::find("NVIDIA A100").unwrap().code, "a100");
        assert!(GpuModel::find("h200").is_none());
        for (product, code) in [
            ("NVIDIA H100 80GB HBM3", "h100"),
            ("NVIDIA A100-SXM4-80GB", "a100"),
            ("Tesla T4", "t4"),
            ("Tesla V100-SXM2-16GB", "v100"),
            ("Tesla P4", "p4"),
            ("NVIDIA GeForce RTX 3060 Ti", "3060ti"),
            ("NVIDIA GeForce RTX 3060", "3060"),
            ("NVIDIA GeForce GTX 1080 Ti", "1080ti"),
            ("NVIDIA L4", "nvidia-l4"),
        ] {
            assert_eq!(GpuModel::code_for_product(product), code, "{product}");
        }
    }

    #[test]
    fn codes_are_unique() {
        let mut codes: Vec<_> = GPU_MODELS.iter().map(|m| m.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), GPU_MODELS.len());
        assert_eq!(GPU_MODELS.len(), 25);
    }
}
