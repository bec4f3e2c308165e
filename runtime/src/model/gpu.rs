//! The catalogue of GPU models containers may ask for by code in `desiredGPUs`
//! (document 002's GET /v1/gpu-models).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique() {
        let mut codes: Vec<_> = GPU_MODELS.iter().map(|m| m.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), GPU_MODELS.len());
        assert_eq!(GPU_MODELS.len(), 25);
    }
}
