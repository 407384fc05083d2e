using System.Text.Json;

namespace Vfio.Type1.Tests.Infrastructure;

/// <summary>Locates and loads <c>shared/conformance/kernel-type1/trace-public.json</c>.</summary>
internal static class KernelTrace
{
    public const string RelativePath = "shared/conformance/kernel-type1/trace-public.json";

    private static readonly Lazy<JsonDocument?> s_doc = new(Load);

    public static string? FindPath()
    {
        for (DirectoryInfo? d = new(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            string p = Path.Combine(d.FullName, RelativePath);
            if (File.Exists(p))
            {
                return p;
            }
        }

        return null;
    }

    public static JsonDocument? Document => s_doc.Value;

    public static IEnumerable<object[]> CaseNames()
    {
        JsonDocument? doc = Document;
        if (doc is null)
        {
            yield return ["<trace-public.json not found>"];
            yield break;
        }

        foreach (JsonElement c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            yield return [c.GetProperty("name").GetString()!];
        }
    }

    public static JsonElement? Case(string name)
    {
        JsonDocument? doc = Document;
        if (doc is null)
        {
            return null;
        }

        foreach (JsonElement c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            if (c.GetProperty("name").GetString() == name)
            {
                return c;
            }
        }

        return null;
    }

    private static JsonDocument? Load()
    {
        string? p = FindPath();
        return p is null ? null : JsonDocument.Parse(File.ReadAllBytes(p));
    }
}
