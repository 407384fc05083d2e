// Compiled by MSBuild (RoslynCodeTaskFactory) from eng/PublicDocs.targets; see the comment there.
#nullable enable
using System;
using System.Collections.Generic;
using System.Collections.Immutable;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Xml.Linq;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public sealed class KeepPublicDocs : Task
{
    [Required]
    public string Assembly { get; set; } = "";

    [Required]
    public string DocumentationFile { get; set; } = "";

    public override bool Execute()
    {
        HashSet<string> visible;
        using (var stream = File.OpenRead(Assembly))
        using (var pe = new PEReader(stream))
        {
            visible = VisibleIds(pe.GetMetadataReader());
        }

        XDocument doc = XDocument.Load(DocumentationFile);
        XElement? members = doc.Root?.Element("members");
        if (members is null)
        {
            return true;
        }

        List<XElement> hidden = members.Elements("member").Where(m => !visible.Contains((string?)m.Attribute("name") ?? "")).ToList();
        foreach (XElement m in hidden)
        {
            m.Remove();
        }

        if (hidden.Count != 0)
        {
            doc.Save(DocumentationFile);
        }

        Log.LogMessage(MessageImportance.Low, $"KeepPublicDocs: {hidden.Count} non-public members dropped from {DocumentationFile}");
        return true;
    }

    private static HashSet<string> VisibleIds(MetadataReader md)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        var names = new Names(md);
        foreach (TypeDefinitionHandle th in md.TypeDefinitions)
        {
            TypeDefinition t = md.GetTypeDefinition(th);
            if (!TypeVisible(md, t))
            {
                continue;
            }

            string type = names.Definition(th);
            ids.Add("T:" + type);
            var ctx = new Context(t.GetGenericParameters().Count);
            foreach (MethodDefinitionHandle mh in t.GetMethods())
            {
                MethodDefinition m = md.GetMethodDefinition(mh);
                if (!MemberVisible(m.Attributes & MethodAttributes.MemberAccessMask))
                {
                    continue;
                }

                ids.Add("M:" + type + "." + MethodPart(md, names, m));
            }

            foreach (FieldDefinitionHandle fh in t.GetFields())
            {
                FieldDefinition f = md.GetFieldDefinition(fh);
                if (MemberVisible((MethodAttributes)(int)(f.Attributes & FieldAttributes.FieldAccessMask)))
                {
                    ids.Add("F:" + type + "." + md.GetString(f.Name));
                }
            }

            foreach (PropertyDefinitionHandle ph in t.GetProperties())
            {
                PropertyDefinition p = md.GetPropertyDefinition(ph);
                PropertyAccessors acc = p.GetAccessors();
                if (!AccessorVisible(md, acc.Getter) && !AccessorVisible(md, acc.Setter))
                {
                    continue;
                }

                MethodSignature<string> sig = p.DecodeSignature(names, ctx);
                string parameters = sig.ParameterTypes.Length == 0 ? "" : "(" + string.Join(",", sig.ParameterTypes) + ")";
                ids.Add("P:" + type + "." + md.GetString(p.Name) + parameters);
            }

            foreach (EventDefinitionHandle eh in t.GetEvents())
            {
                EventDefinition e = md.GetEventDefinition(eh);
                if (AccessorVisible(md, e.GetAccessors().Adder))
                {
                    ids.Add("E:" + type + "." + md.GetString(e.Name));
                }
            }
        }

        return ids;
    }

    private static string MethodPart(MetadataReader md, Names names, MethodDefinition m)
    {
        TypeDefinition declaring = md.GetTypeDefinition(m.GetDeclaringType());
        var ctx = new Context(declaring.GetGenericParameters().Count);
        MethodSignature<string> sig = m.DecodeSignature(names, ctx);
        string name = md.GetString(m.Name).Replace('.', '#');
        int arity = m.GetGenericParameters().Count;
        string id = name + (arity > 0 ? "``" + arity : "");
        if (sig.ParameterTypes.Length > 0)
        {
            id += "(" + string.Join(",", sig.ParameterTypes) + ")";
        }

        if (name is "op_Implicit" or "op_Explicit")
        {
            id += "~" + sig.ReturnType;
        }

        return id;
    }

    private static bool AccessorVisible(MetadataReader md, MethodDefinitionHandle h) =>
        !h.IsNil && MemberVisible(md.GetMethodDefinition(h).Attributes & MethodAttributes.MemberAccessMask);

    private static bool MemberVisible(MethodAttributes access) =>
        access is MethodAttributes.Public or MethodAttributes.Family or MethodAttributes.FamORAssem;

    private static bool TypeVisible(MetadataReader md, TypeDefinition t)
    {
        TypeAttributes v = t.Attributes & TypeAttributes.VisibilityMask;
        if (v == TypeAttributes.Public)
        {
            return true;
        }

        if (v is not (TypeAttributes.NestedPublic or TypeAttributes.NestedFamily or TypeAttributes.NestedFamORAssem))
        {
            return false;
        }

        return TypeVisible(md, md.GetTypeDefinition(t.GetDeclaringType()));
    }

    private readonly struct Context
    {
        public Context(int typeArity) => TypeArity = typeArity;

        public int TypeArity { get; }
    }

    // Documentation-comment ID spelling of types (ECMA-334 annex D).
    private sealed class Names : ISignatureTypeProvider<string, Context>
    {
        private readonly MetadataReader _md;

        public Names(MetadataReader md) => _md = md;

        public string Definition(TypeDefinitionHandle h)
        {
            TypeDefinition t = _md.GetTypeDefinition(h);
            string name = _md.GetString(t.Name);
            if (t.IsNested)
            {
                return Definition(t.GetDeclaringType()) + "." + name;
            }

            string ns = _md.GetString(t.Namespace);
            return ns.Length == 0 ? name : ns + "." + name;
        }

        public string GetArrayType(string elementType, ArrayShape shape) =>
            elementType + "[" + string.Join(",", Enumerable.Repeat("0:", shape.Rank)) + "]";

        public string GetByReferenceType(string elementType) => elementType + "@";

        public string GetFunctionPointerType(MethodSignature<string> signature) => "=FUNC:" + signature.ReturnType + "(" + string.Join(",", signature.ParameterTypes) + ")";

        public string GetGenericInstantiation(string genericType, ImmutableArray<string> typeArguments)
        {
            int tick = genericType.LastIndexOf('`');
            return (tick < 0 ? genericType : genericType.Substring(0, tick)) + "{" + string.Join(",", typeArguments) + "}";
        }

        public string GetGenericMethodParameter(Context genericContext, int index) => "``" + index;

        public string GetGenericTypeParameter(Context genericContext, int index) => "`" + index;

        public string GetModifiedType(string modifier, string unmodifiedType, bool isRequired) => unmodifiedType;

        public string GetPinnedType(string elementType) => elementType;

        public string GetPointerType(string elementType) => elementType + "*";

        public string GetPrimitiveType(PrimitiveTypeCode typeCode) => "System." + typeCode switch
        {
            PrimitiveTypeCode.IntPtr => "IntPtr",
            PrimitiveTypeCode.UIntPtr => "UIntPtr",
            _ => typeCode.ToString(),
        };

        public string GetSZArrayType(string elementType) => elementType + "[]";

        public string GetTypeFromDefinition(MetadataReader reader, TypeDefinitionHandle handle, byte rawTypeKind) => Definition(handle);

        public string GetTypeFromReference(MetadataReader reader, TypeReferenceHandle handle, byte rawTypeKind)
        {
            TypeReference r = reader.GetTypeReference(handle);
            string name = reader.GetString(r.Name);
            if (r.ResolutionScope.Kind == HandleKind.TypeReference)
            {
                return GetTypeFromReference(reader, (TypeReferenceHandle)r.ResolutionScope, rawTypeKind) + "." + name;
            }

            string ns = reader.GetString(r.Namespace);
            return ns.Length == 0 ? name : ns + "." + name;
        }

        public string GetTypeFromSpecification(MetadataReader reader, Context genericContext, TypeSpecificationHandle handle, byte rawTypeKind) =>
            reader.GetTypeSpecification(handle).DecodeSignature(this, genericContext);
    }
}
