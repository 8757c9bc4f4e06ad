//! The CodeArts Pipeline endpoint of each region, as the official SDK's region table lists it.
//!
//! Job: turn `[codearts] region` into an endpoint URL (SPEC §5, §7).
//!
//! Invariant: [`REGIONS`] is the SDK's `CodeArtsPipelineRegion` table (SDK 3.1.219) row for
//! row; the host is not derived from a single pattern because three patterns are in use, and
//! a guessed host would fail only at the first upload.

/// Every region the SDK knows, with the host of its CodeArts Pipeline endpoint.
pub const REGIONS: [(&str, &str); 15] = [
    (
        "cn-north-1",
        "cloudpipeline-ext.cn-north-1.myhuaweicloud.com",
    ),
    (
        "cn-north-4",
        "cloudpipeline-ext.cn-north-4.myhuaweicloud.com",
    ),
    (
        "cn-south-1",
        "cloudpipeline-ext.cn-south-1.myhuaweicloud.com",
    ),
    (
        "cn-south-2",
        "cloudpipeline-ext.cn-south-2.myhuaweicloud.com",
    ),
    ("cn-east-3", "cloudpipeline-ext.cn-east-3.myhuaweicloud.com"),
    ("cn-east-2", "cloudpipeline-ext.cn-east-2.myhuaweicloud.com"),
    (
        "cn-southwest-2",
        "cloudpipeline-ext.cn-southwest-2.myhuaweicloud.com",
    ),
    (
        "ap-southeast-3",
        "cloudpipeline-ext.ap-southeast-3.myhuaweicloud.com",
    ),
    (
        "sa-brazil-1",
        "cloudpipeline-ext.sa-brazil-1.myhuaweicloud.com",
    ),
    (
        "la-north-2",
        "cloudpipeline-ext.la-north-2.myhuaweicloud.com",
    ),
    ("tr-west-1", "pipeline-external.tr-west-1.myhuaweicloud.com"),
    (
        "la-south-2",
        "pipeline-external.la-south-2.myhuaweicloud.com",
    ),
    ("af-north-1", "pipeline.af-north-1.myhuaweicloud.com"),
    ("me-east-1", "pipeline.me-east-1.myhuaweicloud.com"),
    ("af-south-1", "pipeline.af-south-1.myhuaweicloud.com"),
];

/// The endpoint URL (`https://host`, no trailing slash) of `region`, or `None` when the SDK
/// does not know it. Region names are matched exactly, as the SDK does.
pub fn endpoint(region: &str) -> Option<String> {
    REGIONS
        .iter()
        .find(|(name, _)| *name == region)
        .map(|(_, host)| format!("https://{host}"))
}

/// The known region names, comma-separated, for the error about an unknown one.
pub fn known() -> String {
    REGIONS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of SPEC §5, written out by hand so that a typo in [`REGIONS`] shows.
    #[test]
    fn every_row_of_the_sdk_table_resolves() {
        let expected = [
            (
                "cn-north-1",
                "https://cloudpipeline-ext.cn-north-1.myhuaweicloud.com",
            ),
            (
                "cn-north-4",
                "https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com",
            ),
            (
                "cn-south-1",
                "https://cloudpipeline-ext.cn-south-1.myhuaweicloud.com",
            ),
            (
                "cn-south-2",
                "https://cloudpipeline-ext.cn-south-2.myhuaweicloud.com",
            ),
            (
                "cn-east-3",
                "https://cloudpipeline-ext.cn-east-3.myhuaweicloud.com",
            ),
            (
                "cn-east-2",
                "https://cloudpipeline-ext.cn-east-2.myhuaweicloud.com",
            ),
            (
                "cn-southwest-2",
                "https://cloudpipeline-ext.cn-southwest-2.myhuaweicloud.com",
            ),
            (
                "ap-southeast-3",
                "https://cloudpipeline-ext.ap-southeast-3.myhuaweicloud.com",
            ),
            (
                "sa-brazil-1",
                "https://cloudpipeline-ext.sa-brazil-1.myhuaweicloud.com",
            ),
            (
                "la-north-2",
                "https://cloudpipeline-ext.la-north-2.myhuaweicloud.com",
            ),
            (
                "tr-west-1",
                "https://pipeline-external.tr-west-1.myhuaweicloud.com",
            ),
            (
                "la-south-2",
                "https://pipeline-external.la-south-2.myhuaweicloud.com",
            ),
            (
                "af-north-1",
                "https://pipeline.af-north-1.myhuaweicloud.com",
            ),
            ("me-east-1", "https://pipeline.me-east-1.myhuaweicloud.com"),
            (
                "af-south-1",
                "https://pipeline.af-south-1.myhuaweicloud.com",
            ),
        ];
        assert_eq!(expected.len(), REGIONS.len());
        for (region, url) in expected {
            assert_eq!(endpoint(region).as_deref(), Some(url), "{region}");
        }
        assert_eq!(endpoint("cn-north-9"), None);
        assert_eq!(endpoint("CN-NORTH-4"), None);
        assert_eq!(known().split(", ").count(), 15);
    }
}
